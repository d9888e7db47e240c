"""Which runner to use: the default (``auto``) choice, the fallback order of backends per precision and device,
the verification of reduced precisions, and :func:`make_runner`."""

from __future__ import annotations

import os
import sys
import warnings

import torch
from torch import nn

from emonet.devices import resolve_device
from emonet.inference.backends import BackendUnavailable, rule_words, runner_spec, runner_specs, validate
from emonet.inference.choice import BackendChoice, choose, describe
from emonet.inference.onnx import model_fingerprint
from emonet.inference.runners import Runner
from emonet.inference.verify import VerificationSet, cached_verdict

DEFAULT_BACKEND = "auto"  # what Predictor and the commands use unless told otherwise
_ANNOUNCED: set[str] = set()  # choices already printed by this process (once per checkpoint)
_VERIFICATION_SETS: dict[str, VerificationSet] = {}  # fp32 reference outputs, shared by the paths verified


# The precisions tried, in order, when a reduced precision is asked for (fp32, the exact fallback, comes last);
# within one precision the backends come in the order of their candidacy rank on the device (@register_runner).
PRECISION_FALLBACK: dict[str, tuple[str, ...]] = {
    "int8": ("int8", "fp16", "bf16"), "fp16": ("fp16", "bf16"), "bf16": ("bf16", "fp16"), "fp32": (),
}


def _ranked(precision: str, device: torch.device) -> list[tuple[str, str]]:
    """The registered backends that are candidates at ``precision`` on ``device``, best rank first."""
    where = "cpu" if device.type == "cpu" else "gpu"
    ranked = [(getattr(spec, where)[precision], spec.name) for spec in runner_specs()
              if precision in getattr(spec, where)]
    return [(name, precision) for _, name in sorted(ranked, key=lambda item: item[0])]


def candidates(backend: str, precision: str, device: torch.device) -> list[tuple[str, str]]:
    """(backend, precision) pairs tried in order: what ``auto`` or a fallback would use (from the backends'
    candidacy, see :func:`emonet.inference.backends.register_runner`). On a CPU, ``auto`` replaces the fp32
    part by the probed choice (:mod:`emonet.inference.choice`)."""
    chain = [pair for p in (*PRECISION_FALLBACK[precision], "fp32") for pair in _ranked(p, device)]
    if backend != "auto":
        chain = [(backend, precision)] + [c for c in chain if c != (backend, precision)]
    return chain


def _build(
    model: nn.Module, backend: str, precision: str, device: torch.device, with_heatmap: bool,
    cache_dir: str | os.PathLike | None,
) -> Runner:
    return runner_spec(backend).runner(model, device, with_heatmap, precision, cache_dir)


def verify_runner(model: nn.Module, runner: Runner, cache_dir: str | os.PathLike | None = None) -> dict:
    """The verification rule's verdict on a reduced-precision ``runner`` of ``model`` (cached per machine and
    checkpoint; the first time costs 3 fp32 passes and 1 pass of the runner over the verification crops)."""
    key = model_fingerprint(model)

    def verification_set() -> VerificationSet:  # built only when a verdict is not cached yet
        if key not in _VERIFICATION_SETS:
            _VERIFICATION_SETS.clear()  # one model at a time: the reference outputs are small, the crops are not
            _VERIFICATION_SETS[key] = VerificationSet(model)
        return _VERIFICATION_SETS[key]

    figures = cached_verdict(model, runner.backend, runner.precision, runner, cache_dir, verification_set)
    runner.info["verification"] = figures
    return figures


def default_choice(
    model: nn.Module, device: torch.device, with_heatmap: bool = False,
    cache_dir: str | os.PathLike | None = None, announce: bool = True,
) -> tuple[Runner, BackendChoice]:
    """The runner of the default path on a CPU: the cached (or freshly probed) fastest exact backend, eager
    PyTorch when nothing else builds. ``announce`` prints the choice once per process and checkpoint."""
    # the probe's steps are shown as they happen (a first run waits seconds for it; a cached choice says nothing)
    progress = (lambda line: print(f"backend probe: {line}", file=sys.stderr, flush=True)) if announce else None
    choice, runner = choose(model, lambda b, p: _build(model, b, p, device, with_heatmap, cache_dir), cache_dir,
                            progress)
    if runner is None:  # read from the cache: build the chosen backend (the ONNX file is cached too)
        try:
            runner = _build(model, choice.backend, choice.precision, device, with_heatmap, cache_dir)
        except BackendUnavailable as exc:
            warnings.warn(f"the cached backend choice {choice.backend}/{choice.precision} cannot run now ({exc}); "
                          f"using torch/fp32 (delete {choice.path} to probe again)", RuntimeWarning, stacklevel=3)
            runner = _build(model, "torch", "fp32", device, with_heatmap, cache_dir)
    runner.info["choice"] = choice
    key = choice.path or model_fingerprint(model)
    if announce and key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(describe(choice), file=sys.stderr, flush=True)
    return runner, choice


def make_runner(
    model: nn.Module,
    backend: str = "torch",
    precision: str = "fp32",
    device: str | torch.device = "auto",
    with_heatmap: bool = False,
    *,
    allow_fallback: bool = False,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
    announce: bool = True,
) -> Runner:
    """Create an inference runner for ``model`` (backends and precisions: :mod:`emonet.inference.backends`).

    ``backend="auto"`` (the default of :class:`emonet.Predictor` and the commands): at fp32 on a CPU the
    fastest exact path of this machine and checkpoint (:mod:`emonet.inference.choice`, probed once and
    cached, printed once on stderr unless ``announce=False``); at another precision the first candidate
    of :func:`candidates` that builds and passes the verification rule, falling back down the list.

    Reduced precisions (bf16, fp16, int8) are judged with the verification rule
    (:func:`emonet.inference.backends.verify_rule`, once per machine and checkpoint, cached): a path that
    fails is refused with the figures (:class:`BackendUnavailable`), or skipped by ``auto``/``allow_fallback``.
    ``verify=False`` skips the rule (benchmarks measuring unverified paths; the runner's ``info`` says so).
    An explicit backend that cannot run raises :class:`BackendUnavailable`, or, with ``allow_fallback=True``,
    warns and uses the next candidate.
    """
    backend, precision = validate(backend, precision)
    dev = resolve_device(device)  # the one device resolution; runners receive the result
    fallback = allow_fallback or backend == "auto"
    errors: list[str] = []
    for cand_backend, cand_precision in candidates(backend, precision, dev):
        if backend == "auto" and cand_precision == "fp32" and dev.type == "cpu":
            runner, choice = default_choice(model, dev, with_heatmap, cache_dir, announce and not errors)
            if errors:
                warnings.warn(f"inference backend auto/{precision} not available ({'; '.join(errors)}); using "
                              f"the default exact path {choice.backend}/{choice.precision}", RuntimeWarning, stacklevel=2)
            runner.requested = (backend, precision)
            return runner
        try:
            runner = _build(model, cand_backend, cand_precision, dev, with_heatmap, cache_dir)
            if cand_precision != "fp32":
                if verify:
                    figures = verify_runner(model, runner, cache_dir)
                    if not figures["passed"]:
                        raise BackendUnavailable(f"{cand_backend}/{cand_precision} is refused for this checkpoint: "
                                                 f"{rule_words(figures)} (verdict cached in {figures['path']})")
                else:
                    runner.info["verification"] = "skipped (verify=False): not verified"
        except BackendUnavailable as exc:
            if not fallback:
                raise BackendUnavailable(
                    f"{exc}. Use --backend auto (or allow_fallback=True) to fall back to an available backend."
                ) from exc
            errors.append(f"{cand_backend}/{cand_precision}: {exc}")
            continue
        if errors or (backend != "auto" and (cand_backend, cand_precision) != (backend, precision)):
            warnings.warn(
                f"inference backend {backend}/{precision} not available ({'; '.join(errors)}); "
                f"using {cand_backend}/{cand_precision}",
                RuntimeWarning, stacklevel=2,
            )
        runner.requested = (backend, precision)
        return runner
    raise BackendUnavailable("no inference backend available: " + "; ".join(errors))

"""Inference backends and precisions: their names (validated here and nowhere else) and accuracy contract.

Every backend is a runner (:class:`emonet.inference.runners.Runner`): a callable ``runner(batch) -> dict``
where ``batch`` is a float32 CPU tensor (B, 3, S, S) already scaled/normalised for the model, and the dict
holds numpy arrays ``expression`` (B, C) logits, ``valence`` (B,), ``arousal`` (B,) and, when
``with_heatmap`` is set and the model has them, ``heatmap`` (B, 68, 64, 64).

Backends (``make_runner(model, backend=..., precision=...)`` in :mod:`emonet.inference.selection`,
``--backend`` / ``--precision`` on the command line):

========================  =====================  ==========================================================
backend                   precisions             what
========================  =====================  ==========================================================
``torch``                 fp32, bf16, fp16       eager PyTorch; fp32 is the exact reference
``torch-opt``             fp32, bf16, fp16       a copy with BatchNorm folded where exact, in-place
                                                 activations, channels-last memory layout
``torch-compile``         fp32, bf16, fp16       ``torch-opt`` + ``torch.compile`` (inductor, frozen
                                                 weights): slow start-up (minutes on a small CPU)
``onnxruntime``           fp32, int8             ONNX Runtime on a cached export (fp32, checked against
                                                 PyTorch) or a static int8 quantisation calibrated on faces,
                                                 sensitive blocks left fp32 (:mod:`emonet.inference.int8`)
``openvino``              fp32, bf16, int8       OpenVINO's CPU plugin on the same files: the checked export
                                                 (bf16 on CPUs with native bf16: the fastest bf16 path
                                                 measured here) or the int8 file, run by OpenVINO's int8
                                                 kernels (faster than ONNX Runtime's on the same file)
``auto`` (default of      any                    fp32 on a CPU: the fastest exact path of this machine and
Predictor and commands)                          checkpoint, probed once and cached
                                                 (:mod:`emonet.inference.choice`); other precisions: the first
                                                 candidate passing the verification rule, with fallback
========================  =====================  ==========================================================

``bf16`` needs a CPU with native bf16 (AVX512-BF16 or AMX) or a CUDA GPU with bf16; ``fp16`` needs a CUDA
GPU. An unavailable backend raises :class:`BackendUnavailable` with the reason, unless fallback is allowed
(``backend="auto"`` or ``allow_fallback=True``): then the next candidate is used and a warning names it.
:data:`TOLERANCES` lists the documented accuracy of each precision against the fp32 reference;
:func:`agreement` measures it; :func:`verify_rule` is THE rule that every reduced precision must pass
(on faces stable under +-1 grey level), :func:`tolerance_verdict` words a verdict. Pure Python and numpy: the command line
can read these names without loading PyTorch.

Registry: each backend is declared here (:func:`declare_backend`: name, precisions, the module of its runner)
and its runner class registers with :func:`register_runner` (candidacy ranks of ``auto`` and fallback, probed by
the default choice or not); :func:`backend_names`, :func:`backend_precisions` and :func:`validate` read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from emonet.errors import UserError

# -- the backend registry ---------------------------------------------------------------------------------------
# A backend is declared here as data (name, precisions, the module of its runner): enough for the command line's
# choices and :func:`validate` without importing PyTorch. Its runner class registers itself with
# :func:`register_runner` (candidacy of ``auto`` and fallback, the default choice's probe) when that module is
# imported, which :func:`runner_spec` does on first use.
AUTO = "auto"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass
class BackendSpec:
    """One inference backend: its name, precisions and (once its module is imported) runner and candidacy."""

    name: str
    precisions: tuple[str, ...]
    module: str  # the module whose ``@register_runner(name)`` class runs it
    runner: type | None = None  # the runner class, called as ``runner(model, device, with_heatmap, precision, cache_dir)``
    # precision -> rank among the candidates that ``auto`` and fallback try, on a CPU / on a GPU (lower first)
    cpu: dict[str, int] = field(default_factory=dict)
    gpu: dict[str, int] = field(default_factory=dict)
    probe: bool = False  # one of the exact fp32 paths the default choice probes on a CPU (emonet.inference.choice)


_REGISTRY: dict[str, BackendSpec] = {}


def declare_backend(name: str, precisions: tuple[str, ...], module: str) -> BackendSpec:
    """Declare backend ``name`` (a taken name raises): what it runs and where its runner class lives."""
    if name in _REGISTRY or name == AUTO:
        raise ValueError(f"inference backend {name!r} is already declared")
    unknown = set(precisions) - set(PRECISIONS)
    if unknown or not precisions:
        raise ValueError(f"backend {name!r}: precisions must be some of {PRECISIONS}, got {precisions}")
    _REGISTRY[name] = BackendSpec(name, tuple(precisions), module)
    return _REGISTRY[name]


def register_runner(
    name: str, *, cpu: dict[str, int] | None = None, gpu: dict[str, int] | None = None, probe: bool = False,
    precisions: tuple[str, ...] | None = None,
) -> Callable[[type], type]:
    """Class decorator: ``cls`` runs backend ``name`` (declared in this module, or here with ``precisions``
    for a backend that lives outside the package). ``cpu``/``gpu``: precision -> rank of this backend among
    the candidates of ``auto`` and fallback on that device (lower first; absent: never chosen there);
    ``probe``: timed by the default choice on a CPU at fp32."""

    def decorate(cls: type) -> type:
        spec = _REGISTRY.get(name) or declare_backend(name, precisions or (), cls.__module__)
        if precisions is not None and tuple(precisions) != spec.precisions:
            raise ValueError(f"backend {name!r} is declared with precisions {spec.precisions}, not {precisions}")
        if spec.runner is not None and spec.runner is not cls:
            raise ValueError(f"backend {name!r} already has a runner: {spec.runner.__qualname__}")
        for where in (cpu or {}, gpu or {}):
            if not set(where) <= set(spec.precisions):
                raise ValueError(f"backend {name!r}: candidate precisions {sorted(where)} not in {spec.precisions}")
        spec.runner, spec.cpu, spec.gpu, spec.probe = cls, dict(cpu or {}), dict(gpu or {}), probe
        cls.backend = name
        return cls

    return decorate


def unregister_backend(name: str) -> None:
    """Forget backend ``name`` (tests registering a temporary backend)."""
    _REGISTRY.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """Every declared backend, then ``auto``: the ``--backend`` choices."""
    return (*_REGISTRY, AUTO)


def backend_precisions(name: str) -> tuple[str, ...]:
    """The precisions backend ``name`` runs (``KeyError`` when it is not declared)."""
    return _REGISTRY[name].precisions


def runner_spec(name: str) -> BackendSpec:
    """The spec of backend ``name`` with its runner class, importing the runner's module on first use."""
    spec = _REGISTRY[name]
    if spec.runner is None:
        importlib.import_module(spec.module)  # its @register_runner fills spec.runner
        if spec.runner is None:
            raise ValueError(f"backend {name!r}: {spec.module} registers no runner for it")
    return spec


def runner_specs() -> list[BackendSpec]:
    """Every declared backend with its runner class (imports the runners' modules: PyTorch)."""
    return [runner_spec(name) for name in list(_REGISTRY)]


# The built-in backends (their runners: emonet.inference.runners).
declare_backend("torch", ("fp32", "bf16", "fp16"), "emonet.inference.runners")
declare_backend("torch-opt", ("fp32", "bf16", "fp16"), "emonet.inference.runners")
declare_backend("torch-compile", ("fp32", "bf16", "fp16"), "emonet.inference.runners")
declare_backend("onnxruntime", ("fp32", "int8"), "emonet.inference.runners")
declare_backend("openvino", ("fp32", "bf16", "int8"), "emonet.inference.runners")


# Documented accuracy against the fp32 reference (TorchRunner), checked by the tests (generated
# checkpoints) and measured by bench/bench_inference.py on real face crops. fp32 paths: max abs difference
# of every output; reduced precisions: mean abs valence/arousal difference and expression (argmax) agreement.
# The verification rule of every reduced-precision path (bf16, fp16, int8), for real and generated
# checkpoints alike, stated here once: on real face crops whose reference expression is stable under +-1 grey
# level of input noise (the checkpoint's own noise floor, see :func:`stable_faces`), mean |dV/A| against
# the fp32 reference <= VA_MEAN_ABS and expression agreement >= EXPRESSION_AGREEMENT. :func:`verify_rule`
# applies it; a path that fails is refused with the figures.
RULE_VA_MEAN_ABS = 0.02
RULE_EXPRESSION_AGREEMENT = 0.97
RULE_NOISE_GREY_LEVELS = 1
RULE_MIN_STABLE_FACES = 8  # fewer stable faces than this: no verdict can be given (refused)
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4},
    "bf16": {"va_mean_abs": RULE_VA_MEAN_ABS, "expression_agreement": RULE_EXPRESSION_AGREEMENT},
    "fp16": {"va_mean_abs": RULE_VA_MEAN_ABS, "expression_agreement": RULE_EXPRESSION_AGREEMENT},
    "int8": {"va_mean_abs": RULE_VA_MEAN_ABS, "expression_agreement": RULE_EXPRESSION_AGREEMENT},
}


class BackendUnavailable(UserError, RuntimeError):
    """The requested backend/precision cannot run here (missing package, no GPU, no bf16 support...)."""


def validate(backend: str, precision: str) -> tuple[str, str]:
    """``(backend, precision)`` lower-cased; ``ValueError`` naming the choices when either is unknown or
    the backend does not run that precision."""
    backend, precision = str(backend).lower(), str(precision).lower()
    if backend not in backend_names():
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend != AUTO and precision not in backend_precisions(backend):
        others = [spec.name for spec in _REGISTRY.values() if precision in spec.precisions]
        raise ValueError(
            f"backend {backend!r} supports precision {', '.join(backend_precisions(backend))}, not {precision!r} "
            f"(use --backend {' or '.join(others + [AUTO])})"
        )
    return backend, precision


# -- accuracy against the fp32 reference ---------------------------------------------------------------------
def agreement(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], multi_label: bool = False) -> dict[str, float]:
    """Accuracy cost of ``other`` against ``reference`` outputs: V/A abs differences, expression agreement.

    Valence/arousal are compared as reported (clipped to [-1, 1]); ``expression_agreement`` is the share of
    faces with the same top class (softmax models) or the same positive/negative decisions at 0.5
    (multi-label models).
    """
    va = np.concatenate([
        np.clip(other[k], -1, 1) - np.clip(reference[k], -1, 1) for k in ("valence", "arousal")
    ]).astype(np.float64)
    if multi_label:
        same = ((other["expression"] > 0) == (reference["expression"] > 0)).mean()
    else:
        same = (other["expression"].argmax(1) == reference["expression"].argmax(1)).mean()
    result = {
        "va_max_abs": float(np.abs(va).max()) if va.size else 0.0,
        "va_mean_abs": float(np.abs(va).mean()) if va.size else 0.0,
        "expression_agreement": float(same),
        "logits_max_abs": float(np.abs(other["expression"] - reference["expression"]).max()),
        "n_faces": int(len(reference["valence"])),
    }
    if "heatmap" in reference and "heatmap" in other:
        result["heatmap_max_abs"] = float(np.abs(other["heatmap"] - reference["heatmap"]).max())
    # raw (unclipped) differences and magnitudes per output, for the fp32 check (within_tolerance)
    result["max_abs"] = {k: float(np.abs(other[k] - reference[k]).max()) for k in reference if k in other and reference[k].size}
    result["scale"] = {k: float(np.abs(reference[k]).max()) for k in reference if k in other and reference[k].size}
    return result


def within_tolerance(diffs: dict[str, float], scales: dict[str, float], tolerance: float) -> bool:
    """Every output within ``tolerance`` absolute, relative to its magnitude where that exceeds 1 (fp32 rounding
    is relative: logits of 20 legitimately differ more than valence in [-1, 1])."""
    return all(diffs[k] <= tolerance * max(1.0, scales.get(k, 0.0)) for k in diffs)


def tolerance_verdict(precision: str, accuracy: dict[str, float]) -> tuple[bool, str]:
    """Whether a reduced-precision (bf16/fp16/int8) accuracy report (see :func:`agreement`) is
    within :data:`TOLERANCES` for ``precision``, and the measured figures in words."""
    if "passed" in accuracy and "n_stable" in accuracy:  # figures of verify_rule: its verdict, its words
        return bool(accuracy["passed"]), rule_words(accuracy)
    limits = TOLERANCES[precision]
    ok = (accuracy["va_mean_abs"] <= limits["va_mean_abs"]
          and accuracy["expression_agreement"] >= limits["expression_agreement"])
    words = (f"on {accuracy.get('n_faces', 'the')} held-out face crops mean |dV/A| = {accuracy['va_mean_abs']:.3f} "
             f"and expression agreement {accuracy['expression_agreement']:.0%} against fp32, "
             f"{'within' if ok else 'outside'} the documented tolerance (mean |dV/A| <= {limits['va_mean_abs']}, "
             f"agreement >= {limits['expression_agreement']:.0%})")
    return ok, words


# -- the verification rule of reduced precisions ----------------------------------------------------------------
def _decisions(out: dict[str, np.ndarray], multi_label: bool) -> np.ndarray:
    """Per face, what the expression output decides: the top class, or every category's yes/no at 0.5."""
    return (out["expression"] > 0) if multi_label else out["expression"].argmax(1)[:, None]


def stable_faces(reference: dict[str, np.ndarray], perturbed: list[dict[str, np.ndarray]],
                 multi_label: bool = False) -> np.ndarray:
    """Faces whose reference expression decision is the same on every ``perturbed`` copy of the input (the
    crops +-1 grey level): elsewhere even fp32 flips with one grey level, so no path can be judged there."""
    base = _decisions(reference, multi_label)
    keep = np.ones(len(base), dtype=bool)
    for other in perturbed:
        keep &= (_decisions(other, multi_label) == base).all(axis=1)
    return keep


def verify_rule(reference: dict[str, np.ndarray], perturbed: list[dict[str, np.ndarray]],
                candidate: dict[str, np.ndarray], multi_label: bool = False) -> dict:
    """THE verification rule of reduced-precision paths (see :data:`RULE_VA_MEAN_ABS`): the figures and the
    verdict of ``candidate`` against the fp32 ``reference`` outputs on the faces that :func:`stable_faces`
    keeps (``perturbed``: the reference on the crops +-1 grey level)."""
    keep = stable_faces(reference, perturbed, multi_label)
    n_kept = int(keep.sum())
    figures: dict = {"n_faces": int(len(keep)), "n_stable": n_kept,
                     "rule": {"va_mean_abs": RULE_VA_MEAN_ABS, "expression_agreement": RULE_EXPRESSION_AGREEMENT,
                              "noise_grey_levels": RULE_NOISE_GREY_LEVELS, "min_stable_faces": RULE_MIN_STABLE_FACES}}
    if n_kept:
        acc = agreement({k: v[keep] for k, v in reference.items()}, {k: v[keep] for k, v in candidate.items()},
                        multi_label)
        figures.update(va_mean_abs=acc["va_mean_abs"], va_max_abs=acc["va_max_abs"],
                       expression_agreement=acc["expression_agreement"])
    figures["passed"] = bool(n_kept >= RULE_MIN_STABLE_FACES
                             and figures["va_mean_abs"] <= RULE_VA_MEAN_ABS
                             and figures["expression_agreement"] >= RULE_EXPRESSION_AGREEMENT)
    return figures


def rule_words(figures: dict) -> str:
    """A :func:`verify_rule` result in one sentence (printed when a path is chosen or refused)."""
    kept = f"{figures['n_stable']} of {figures['n_faces']} face crops stable under +-{RULE_NOISE_GREY_LEVELS} grey level"
    if "va_mean_abs" not in figures or figures["n_stable"] < RULE_MIN_STABLE_FACES:
        return f"not verifiable: only {kept} (at least {RULE_MIN_STABLE_FACES} needed)"
    return (f"mean |dV/A| {figures['va_mean_abs']:.3f} (<= {RULE_VA_MEAN_ABS}), expression agreement "
            f"{figures['expression_agreement']:.1%} (>= {RULE_EXPRESSION_AGREEMENT:.0%}) on {kept}: "
            f"{'verified' if figures['passed'] else 'FAILS the rule'}")

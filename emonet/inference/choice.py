"""The default backend (``auto`` at fp32 on a CPU): the fastest path that is exact (every output within
1e-4 of eager fp32 PyTorch) on this machine, chosen ONCE per machine and checkpoint by a small probe whose
result is cached on disk.

The probe (:func:`probe`) builds each candidate of :func:`cpu_candidates` (the backends registered with
``probe=True``: eager PyTorch, ``torch-opt``, ONNX Runtime and OpenVINO on the checked export), runs it on :data:`PROBE_CROPS` natural images (the sample photos), keeps
it only if it matches the eager reference within 1e-4, and times :data:`PROBE_ROUNDS` single-face forwards
per candidate, interleaved (a busy period of a shared machine slows all of them alike). The fastest exact
candidate wins if it beats eager by :data:`MIN_GAIN`; eager PyTorch is the fallback whenever nothing else
builds or matches. A candidate whose possible gain is bounded (:data:`GAIN_CEILING`: ``torch-opt`` only
folds batch norms) is tried last, and not at all once an exact path already beats eager by more than that
bound on the check run. Cost for EmoNet on an idle 2-core CPU: about 5-10 s once (ONNX export and its check
included; ``bench/bench_probe.py``), then reading a small JSON file. The probe says what it does as it does
it (``report``: one line per step on stderr when the choice is announced, the first before any forward:
the export, each candidate checked and timed, the choice).

Cache: ``$EMONET_CHOICE_CACHE`` if set, else ``<cache>/choice`` (``$EMONET_CACHE`` or ``~/.cache/emonet``);
one file per checkpoint (hash of architecture, config and weights) and machine (CPU model and flags,
threads, library versions: :func:`emonet.devices.machine_key`). Delete the file to probe again. Cached
files are checked on read (:func:`valid_choice`, :func:`valid_speeds`: every field's type and range, a known
backend): an invalid one is ignored and rebuilt by a new probe, never used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emonet.devices import machine_fingerprint, machine_key
from emonet.fileio import write_json_atomic
from emonet.inference.backends import TOLERANCES, agreement, runner_specs, within_tolerance
from emonet.inference.onnx import cache_dir, check_inputs, model_fingerprint
from emonet.inference.runners import Runner

CHOICE_ENV = "EMONET_CHOICE_CACHE"
CHOICE_VERSION = 2  # bump when the probe or the candidates change: invalidates cached choices
PROBE_CROPS = 2
PROBE_ROUNDS = 3  # timing rounds at most; a round after the second only while within PROBE_TIMING_BUDGET_S
PROBE_TIMING_BUDGET_S = 3.0
SLOWER_LIMIT = 1.5  # a path this much slower than the fastest after a round cannot win: not timed again
MIN_GAIN = 1.05  # below this the measured gain is within a shared machine's noise: stay with eager
TINY_FORWARD_S = 0.005  # an eager forward faster than this: no other path can pay for its setup; no probe
# A model with this many parameters is never tiny (EmoNet has 14M): the probe announces itself before its
# first forward, which takes seconds on a busy machine; smaller ones say nothing until they are timed.
ANNOUNCE_PARAMETERS = 1_000_000
# The largest speed-up over eager a candidate can bring, where it is bounded: torch-opt runs the same kernels
# with batch norms folded and channels-last (measured 1.12-1.16x on EmoNet, bench_inference 2026-12-02). It is
# tried after the others and skipped once an exact path's check run already beats eager by more: building
# and checking it costs about three eager forwards, a third of the probe.
GAIN_CEILING = {"torch-opt": 1.3}

Builder = Callable[[str, str], Runner]
Report = Callable[[str], None]  # receives one progress line of the probe


def _quiet(_line: str) -> None:
    pass


@dataclass
class BackendChoice:
    """What the probe chose and why (stored as JSON)."""

    backend: str
    precision: str = "fp32"
    speedup: float = 1.0  # median per-round speed-up over eager at batch 1
    max_abs: float = 0.0  # largest output difference from eager fp32 on the probe images
    ms_per_face: dict[str, float] = field(default_factory=dict)  # batch 1, per candidate
    rejected: dict[str, str] = field(default_factory=dict)  # candidate -> why not
    reason: str = ""
    chosen_on: str = ""
    probe_s: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # cache file ("" when not cached)
    cached: bool = False  # read back from the cache
    probed: bool = True  # False: a tiny model, decided without probing (never cached)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("path", "cached", "probed")}


def cpu_candidates() -> list[tuple[str, str]]:
    """The exact fp32 paths the probe times on a CPU: every backend registered with ``probe=True``."""
    return [(spec.name, "fp32") for spec in runner_specs() if spec.probe]


def choice_dir(directory: str | os.PathLike | None = None) -> Path:
    """Folder of cached choices: ``$EMONET_CHOICE_CACHE``, else ``<cache_dir(directory)>/choice``."""
    env = os.environ.get(CHOICE_ENV)
    return Path(env).expanduser() if env else cache_dir(directory) / "choice"


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of what decides the speed of a model, not its values: class, architecture, config, parameter
    names and shapes, input size."""
    meta = {"class": type(model).__name__, "arch": getattr(model, "arch", None), "config": getattr(model, "config", None),
            "input_size": getattr(model, "input_size", None),
            "shapes": [[k, list(v.shape)] for k, v in model.state_dict().items()]}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]


def speed_path(model: nn.Module, directory: str | os.PathLike | None = None) -> Path:
    """The cache file of the candidates' measured speeds for this architecture on this machine (weights do
    not change the speed of dense convolutions: a new checkpoint of a known architecture is not timed again)."""
    arch = str(getattr(model, "arch", type(model).__name__))
    return (choice_dir(directory)
            / f"speed-{arch}-{architecture_fingerprint(model)}-{machine_fingerprint()}-v{CHOICE_VERSION}.json")


def choice_path(model: nn.Module, directory: str | os.PathLike | None = None) -> Path:
    """The cache file of ``model``'s choice on this machine."""
    arch = str(getattr(model, "arch", type(model).__name__))
    return choice_dir(directory) / f"{arch}-{model_fingerprint(model)[:20]}-{machine_fingerprint()}-v{CHOICE_VERSION}.json"


def describe(choice: BackendChoice) -> str:
    """The one line printed when the default path is used, e.g. ``backend: onnxruntime fp32, exact
    (max |d| 3e-06), 1.8x eager; chosen on 2026-11-28, cached in ...``."""
    if choice.backend == "torch" and choice.reason:
        head = f"backend: torch fp32 (eager PyTorch, the reference): {choice.reason}"
    else:
        head = (f"backend: {choice.backend} {choice.precision}, exact (max |d| {choice.max_abs:.0e}), "
                f"{choice.speedup:.2f}x eager")
    where = f"cached in {choice.path}" if choice.path else "not cached"
    when = f"chosen on {choice.chosen_on}" if choice.chosen_on else "chosen now"
    return f"{head}; {when}, {where} (--backend torch for the reference; delete the file to probe again)"


def _time_rounds(runners: dict[str, Runner], x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner(x)
            times[key].append(time.perf_counter() - start)
    return times


def _exact(reference: dict, out: dict) -> tuple[bool, float]:
    acc = agreement(reference, out)
    return (within_tolerance(acc["max_abs"], acc["scale"], TOLERANCES["fp32"]["max_abs"]),
            max(acc["max_abs"].values(), default=0.0))


_BUILD_WORDS = {"onnxruntime": "exporting to ONNX (checked against PyTorch) and opening it in ONNX Runtime",
                "openvino": "compiling the ONNX export with OpenVINO", "torch-opt": "folding batch norms"}


class _Candidates:
    """The runners of one probe: each candidate built, run on the probe crops and kept only if exact.

    ``check_s`` holds each path's seconds per face on its check run (eager: the reference run), a first
    forward for all of them alike: enough to tell that a bounded candidate cannot win (:meth:`best_check_gain`).
    """

    def __init__(self, build: Builder, x: torch.Tensor, reference: dict, reference_runner: Runner,
                 choice: BackendChoice, report: Report, reference_s: float) -> None:
        self.build, self.x, self.reference, self.choice, self.report = build, x, reference, choice, report
        self.runners: dict[str, Runner] = {"torch/fp32": reference_runner}
        self.max_abs: dict[str, float] = {}
        self.check_s: dict[str, float] = {"torch/fp32": reference_s}

    def best_check_gain(self) -> tuple[str, float]:
        """The exact path with the fastest check run and its speed-up over eager's reference run."""
        best = min(self.check_s, key=lambda k: self.check_s[k])
        return best, self.check_s["torch/fp32"] / max(self.check_s[best], 1e-9)

    def worth_trying(self, key: str) -> bool:
        """False (said on ``report``, noted in ``rejected``) when ``key``'s bounded gain cannot beat what an
        exact path already showed."""
        ceiling = GAIN_CEILING.get(key.split("/")[0])
        best, gain = self.best_check_gain()
        if ceiling is None or gain <= ceiling:
            return True
        self.choice.rejected[key] = f"not tried: {best} already ran {gain:.2f}x eager, more than its {ceiling}x at most"
        self.report(f"{key}: skipped ({best} already {gain:.1f}x eager on its check; {key} gains {ceiling}x at most)")
        return False

    def try_(self, key: str) -> bool:
        backend = key.split("/")[0]
        self.report(f"{key}: {_BUILD_WORDS.get(backend, 'building')}...")
        start = time.perf_counter()
        try:
            runner = self.build(*key.split("/"))
            begin = time.perf_counter()
            out = runner(self.x)
            check_s = (time.perf_counter() - begin) / len(self.x)
            ok, diff = _exact(self.reference, out)
        except Exception as exc:  # noqa: BLE001 - any failure (missing package, export, kernel) rules it out
            self.choice.rejected[key] = f"{type(exc).__name__}: {exc}"
            self.report(f"{key}: not usable here ({type(exc).__name__})")
            return False
        if not ok:
            self.choice.rejected[key] = f"not exact: max |d| {diff:.1e} > {TOLERANCES['fp32']['max_abs']:g}"
            self.report(f"{key}: not exact (max |d| {diff:.1e}), left out")
            return False
        self.runners[key], self.max_abs[key], self.check_s[key] = runner, diff, check_s
        self.report(f"{key}: exact (max |d| {diff:.0e}), ready in {time.perf_counter() - start:.1f} s")
        return True


def _time_candidates(runners: dict[str, Runner], x: torch.Tensor,
                     checked: dict[str, float] | None = None) -> dict[str, list[float]]:
    """Interleaved rounds of one forward per path (a busy period slows all alike); after each round the
    paths :data:`SLOWER_LIMIT` times slower than the fastest drop out (eager PyTorch, usually the slowest,
    is then timed once), and rounds stop at :data:`PROBE_ROUNDS`, or after two once the budget is spent.

    ``checked``: seconds per face of each path's check run (a first forward for all alike); a path already
    that much slower than the fastest there is not timed at all and keeps that figure (eager PyTorch, next
    to ONNX Runtime: one eager forward less)."""
    fastest_check = min(checked.values()) if checked else 0.0
    slow = {k for k in runners if checked and checked.get(k, 0.0) > SLOWER_LIMIT * fastest_check}
    times: dict[str, list[float]] = {k: [checked[k]] if k in slow else [] for k in runners}
    active, start = [k for k in runners if k not in slow], time.perf_counter()
    for round_ in range(PROBE_ROUNDS):
        for key in active:
            begin = time.perf_counter()
            runners[key](x)
            times[key].append(time.perf_counter() - begin)
        fastest = min(statistics.median(times[k]) for k in active)
        active = [k for k in active if statistics.median(times[k]) <= SLOWER_LIMIT * fastest]
        if len(active) <= 1 or (round_ >= 1 and time.perf_counter() - start > PROBE_TIMING_BUDGET_S):
            break
    return times


def _timed_best(found: _Candidates, choice: BackendChoice, report: Report) -> tuple[str, float]:
    """Time the exact candidates at batch 1 (:func:`_time_candidates`): the fastest and its speed-up over eager."""
    report(f"timing {len(found.runners)} exact path(s) on one face each...")
    times = _time_candidates(found.runners, found.x[:1], found.check_s)
    median = {k: statistics.median(v) for k, v in times.items()}
    speedups = {k: median["torch/fp32"] / v for k, v in median.items()}
    choice.ms_per_face = {k: round(1000 * v, 2) for k, v in median.items()}
    report("timed: " + ", ".join(f"{k} {v:.0f} ms" for k, v in choice.ms_per_face.items()))
    best = max(speedups, key=lambda k: speedups[k])
    if speedups[best] < MIN_GAIN:
        best = "torch/fp32"
    return best, speedups[best]


def _announcement(model: nn.Module) -> str:
    return (f"choosing the fastest exact inference path for {getattr(model, 'arch', type(model).__name__)} on this "
            "machine (once; --backend torch skips this)")


def _reference_times(reference_runner: Runner, x: torch.Tensor, speeds: dict | None
                     ) -> tuple[dict, list[float]]:
    """Eager's outputs on the probe crops and its seconds per face: the reference run, which is also the first
    timing (no separate warm-up forwards: on a 2-core CPU each EmoNet forward costs a noticeable part of the
    probe); near the tiny limit (and only then) a warm forward decides."""
    begin = time.perf_counter()
    reference = reference_runner(x)
    warm = [(time.perf_counter() - begin) / len(x)]
    if not speeds and warm[0] < 20 * TINY_FORWARD_S:
        warm += _time_rounds({"torch/fp32": reference_runner}, x[:1], 1)["torch/fp32"]
    return reference, warm


def _probe_order(keys: list[str]) -> list[str]:
    """Candidates with an unbounded gain first (registry order), bounded ones (:data:`GAIN_CEILING`) last:
    the first ones' check runs tell whether the bounded ones can still win."""
    return sorted(keys, key=lambda k: k.split("/")[0] in GAIN_CEILING)


def probe(model: nn.Module, build: Builder, speeds: dict[str, Any] | None = None,
          candidates: list[tuple[str, str]] | None = None,
          report: Report | None = None) -> tuple[BackendChoice, dict[str, Runner]]:
    """Choose for ``model`` (see the module docstring); returns the choice and the runners built.

    ``speeds`` (speed-up over eager per candidate, from an earlier probe of the same architecture on this
    machine): the candidates are tried fastest first and only checked for exactness, not timed again.
    ``report`` receives a line at each step (what is being built, checked, timed); for a model of at least
    :data:`ANNOUNCE_PARAMETERS` parameters the first one comes before any forward.
    """
    report = report or _quiet
    start = time.perf_counter()
    candidates = list(candidates or cpu_candidates())
    # a large model says at once what the wait is for; a small one may be tiny (decided silently below)
    announced = sum(p.numel() for p in model.parameters()) >= ANNOUNCE_PARAMETERS
    if announced:
        report(_announcement(model))
    x = check_inputs(model, PROBE_CROPS)
    reference_runner = build("torch", "fp32")
    choice = BackendChoice("torch", machine=machine_key(), chosen_on=time.strftime("%Y-%m-%d %H:%M"))
    reference, warm = _reference_times(reference_runner, x, speeds)
    # A tiny model (tests, toy models): nothing can beat eager by enough to pay for an export; no probe. With
    # known speeds the architecture was probed before (it was not tiny): no timing at all.
    if not speeds and min(warm) < TINY_FORWARD_S:
        choice.reason = f"the model is too small for another path to pay ({1000 * min(warm):.1f} ms per forward)"
        choice.ms_per_face["torch/fp32"] = round(1000 * min(warm), 3)
        choice.probed = False
        choice.probe_s = round(time.perf_counter() - start, 2)
        return choice, {"torch/fp32": reference_runner}
    if not announced:
        report(_announcement(model))
    report(f"torch/fp32 (eager PyTorch, the reference): {1000 * warm[0]:.0f} ms per face")
    found = _Candidates(build, x, reference, reference_runner, choice, report, warm[0])
    keys = _probe_order([f"{b}/{p}" for b, p in candidates if f"{b}/{p}" != "torch/fp32"])
    if speeds:  # known architecture: fastest first, stop at the first exact one
        report("this architecture was timed before here: checking the fastest known path on these weights")
        choice.ms_per_face = dict(speeds.get("ms_per_face", {}))
        ranked = sorted((k for k in keys if speeds["speedup"].get(k, 0.0) >= MIN_GAIN),
                        key=lambda k: -speeds["speedup"][k])
        best = next((k for k in ranked if found.try_(k)), "torch/fp32")
        speedup = speeds["speedup"].get(best, 1.0)
        timed = f"speeds measured on {speeds.get('measured_on', '?')} for this architecture"
    else:
        for key in keys:
            if found.worth_trying(key):
                found.try_(key)
        best, speedup = _timed_best(found, choice, report)
        timed = "timed now"
    if best != "torch/fp32":
        choice.backend, choice.precision = best.split("/")
        choice.speedup, choice.max_abs = round(speedup, 3), found.max_abs[best]
        choice.reason = f"the fastest exact path here ({speedup:.2f}x eager at batch 1; {timed})"
    else:
        choice.reason = (f"no other exact path is at least {MIN_GAIN}x faster here"
                         if len(found.runners) > 1 or not choice.rejected else "no other exact path builds here")
    choice.probe_s = round(time.perf_counter() - start, 2)
    return choice, found.runners


def speed_record(choice: BackendChoice) -> dict[str, Any] | None:
    """What a full probe measured, to be reused by other checkpoints of the same architecture."""
    ref = choice.ms_per_face.get("torch/fp32")
    if not ref or len(choice.ms_per_face) < 2:
        return None
    return {"ms_per_face": choice.ms_per_face, "measured_on": choice.chosen_on, "machine": choice.machine,
            "speedup": {k: round(ref / v, 3) for k, v in choice.ms_per_face.items() if v > 0}}


def _number(value: Any, low: float = 0.0, positive: bool = False) -> bool:
    """A finite real number (not a bool) >= ``low`` (> ``low`` with ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > low if positive else value >= low


def _mapping_of(value: Any, check: Callable[[Any], bool]) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def valid_choice(data: Any) -> str:
    """Why ``data`` (a cached choice file's JSON) is not a usable choice, or ``""`` when it is: every field
    present with its type and range, the backend one of the registered CPU candidates."""
    if not isinstance(data, dict):
        return f"not a JSON object ({type(data).__name__})"
    known = {f"{b}/{p}" for b, p in cpu_candidates()} | {"torch/fp32"}
    checks: dict[str, Callable[[Any], bool]] = {
        "backend": lambda v: isinstance(v, str), "precision": lambda v: isinstance(v, str),
        "speedup": lambda v: _number(v, positive=True), "max_abs": _number,
        "ms_per_face": lambda v: _mapping_of(v, _number), "rejected": lambda v: _mapping_of(v, lambda r: isinstance(r, str)),
        "reason": lambda v: isinstance(v, str), "chosen_on": lambda v: isinstance(v, str),
        "probe_s": _number, "machine": lambda v: isinstance(v, dict),
    }
    for key, check in checks.items():
        if key not in data or not check(data[key]):
            return f"field {key!r} is missing or invalid ({data.get(key)!r:.60})"
    if f"{data['backend']}/{data['precision']}" not in known:
        return f"unknown backend {data['backend']}/{data['precision']}"
    return ""


def valid_speeds(data: Any) -> str:
    """Why ``data`` (a cached speed record) is not usable, or ``""``: positive finite speed-ups and times."""
    if not isinstance(data, dict):
        return f"not a JSON object ({type(data).__name__})"
    if not _mapping_of(data.get("speedup"), lambda v: _number(v, positive=True)) or "torch/fp32" not in data["speedup"]:
        return "field 'speedup' is missing or invalid"
    if not _mapping_of(data.get("ms_per_face", {}), _number) or not isinstance(data.get("measured_on", ""), str):
        return "field 'ms_per_face' or 'measured_on' is invalid"
    return ""


def _read_checked(path: Path, check: Callable[[Any], str], report: Report) -> Any | None:
    """The JSON in ``path`` when it passes ``check``; None when missing, unreadable or invalid (said on
    ``report``: it is rebuilt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        report(f"ignoring the unreadable cache file {path} ({type(exc).__name__}); probing again")
        return None
    why = check(data)
    if why:
        report(f"ignoring the invalid cache file {path} ({why}); probing again")
        return None
    return data


def load_choice(path: Path, report: Report | None = None) -> BackendChoice | None:
    """A cached choice, or None when missing, unreadable or invalid (then the probe runs again)."""
    data = _read_checked(path, valid_choice, report or _quiet)
    if data is None:
        return None
    return BackendChoice(**{k: v for k, v in data.items() if k in BackendChoice.__dataclass_fields__},
                         path=str(path), cached=True)


def choose(model: nn.Module, build: Builder, directory: str | os.PathLike | None = None,
           report: Report | None = None) -> tuple[BackendChoice, Runner | None]:
    """The cached choice for ``model`` on this machine, or a fresh probe (stored). Returns the choice and,
    after a probe, the chosen runner already built (None when read from the cache). ``report`` receives
    the probe's progress lines (never called when the cached choice is used)."""
    report = report or _quiet
    path = choice_path(model, directory)
    cached = load_choice(path, report)
    if cached is not None:
        return cached, None
    speeds_file = speed_path(model, directory)
    speeds = _read_checked(speeds_file, valid_speeds, report)
    choice, runners = probe(model, build, speeds, report=report)
    runner = runners.get(f"{choice.backend}/{choice.precision}")
    if not choice.probed:
        return choice, runner  # a tiny model: the decision costs two forwards, not worth a file
    report(f"chose {choice.backend}/{choice.precision} in {choice.probe_s:.1f} s")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = None if speeds else speed_record(choice)
        if record is not None:
            write_json_atomic(speeds_file, record)
        write_json_atomic(path, choice.to_dict())
        choice.path = str(path)
    except OSError as exc:  # a read-only home: use the choice, say it was not kept
        choice.rejected["cache"] = f"could not write {path}: {exc}"
    return choice, runner

"""The default backend: a cached per-machine, per-checkpoint probe of the fastest exact path, printed once,
never run for an explicit backend, eager PyTorch when nothing else works."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, ColourModel

import emonet.inference.choice as choice_module
import emonet.inference.runners as runners
import emonet.inference.selection as selection
from emonet.checkpoint import load_model
from emonet.inference.backends import TOLERANCES, agreement, within_tolerance
from emonet.inference.choice import choice_path, describe, speed_path
from emonet.inference.onnx import check_inputs
from emonet.inference.selection import make_runner
from emonet.models import create_model
from emonet.predictor import Predictor


@pytest.fixture()
def choices(tmp_path, monkeypatch):
    """A fresh choice cache, and a fresh 'already printed' memory, for one test."""
    monkeypatch.setenv("EMONET_CHOICE_CACHE", str(tmp_path / "choice"))
    monkeypatch.setattr(selection, "_ANNOUNCED", set())
    return tmp_path / "choice"


@pytest.fixture(scope="module")
def small_resnet():
    """A dual-head ResNet-18 at 64x64: real convolutions, exported in seconds."""
    torch.manual_seed(0)
    model = create_model("resnet18_dual_head", input_size=64).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_default_is_probed_once_cached_and_printed_once(official_checkpoint_8, choices, capsys):
    model = load_model(official_checkpoint_8, device="cpu")
    predictor = Predictor(model, device="cpu", detector=None, landmarks=True)  # the default: auto
    choice = predictor.runner.info["choice"]
    path = choice_path(model)
    assert choice.path == str(path) and path.exists() and speed_path(model).exists()
    stored = json.loads(path.read_text())
    assert stored["backend"] == choice.backend == predictor.runner.backend
    assert "torch/fp32" in stored["ms_per_face"] and len(stored["ms_per_face"]) >= 2
    # torch-opt is timed, or skipped because a faster exact path's check already beat its ceiling
    assert "torch-opt/fp32" in stored["ms_per_face"] or stored["rejected"]["torch-opt/fp32"].startswith("not tried")
    assert stored["machine"]["cpu"] and "flags" in stored["machine"] and stored["machine"]["torch"] == torch.__version__
    # whatever was chosen is exact against eager fp32 (landmarks included)
    x = check_inputs(model, 2)
    ref = make_runner(model, "torch", "fp32", "cpu", with_heatmap=True)(x)
    acc = agreement(ref, predictor.runner(x))
    assert within_tolerance(acc["max_abs"], acc["scale"], TOLERANCES["fp32"]["max_abs"]) and "heatmap" in acc["max_abs"]
    err = capsys.readouterr().err
    assert err.count("backend: ") == 1 and f"cached in {path}" in err and "x eager" in err or "reference" in err
    # a second predictor reads the cache: no probe, no second line
    again = Predictor(model, device="cpu", detector=None)
    assert again.runner.info["choice"].cached and again.runner.backend == choice.backend
    assert "backend: " not in capsys.readouterr().err
    # an explicit backend never probes
    path.unlink()
    explicit = Predictor(model, device="cpu", detector=None, backend="torch")
    assert explicit.runner.backend == "torch" and "choice" not in explicit.runner.info and not path.exists()


def test_other_weights_reuse_the_timing_but_are_checked(small_resnet, choices, monkeypatch):
    monkeypatch.setattr(choice_module, "TINY_FORWARD_S", 0.0)  # probe even this small model
    first = make_runner(small_resnet, "auto", "fp32", "cpu", announce=False).info["choice"]
    assert "timed now" in first.reason or first.backend == "torch"
    speeds = json.loads(speed_path(small_resnet).read_text())
    # another checkpoint of the same architecture: not timed again, still checked against its own eager output
    other = create_model("resnet18_dual_head", input_size=64).eval()
    calls = []
    monkeypatch.setattr(choice_module, "_time_rounds", lambda *a: calls.append(a) or pytest.fail("timed again"))
    monkeypatch.setattr(choice_module, "_time_candidates", lambda *a: pytest.fail("timed again"))
    second = make_runner(other, "auto", "fp32", "cpu", announce=False)
    choice = second.info["choice"]
    assert choice_path(other) != choice_path(small_resnet) and choice_path(other).exists()
    if choice.backend != "torch":
        assert "speeds measured on" in choice.reason and choice.speedup == speeds["speedup"][f"{choice.backend}/fp32"]
    x = torch.randn(2, 3, 64, 64)
    ref = make_runner(other, "torch", "fp32", "cpu")(x)
    acc = agreement(ref, second(x))
    assert within_tolerance(acc["max_abs"], acc["scale"], 1e-4)


def test_fallbacks_to_eager_when_nothing_else_works(small_resnet, choices, monkeypatch, capsys):
    monkeypatch.setattr(choice_module, "TINY_FORWARD_S", 0.0)
    monkeypatch.setattr(runners, "onnxruntime_status", lambda: (False, "onnxruntime is not installed"))
    monkeypatch.setattr(choice_module, "cpu_candidates", lambda: [("torch", "fp32"), ("onnxruntime", "fp32")])
    runner = make_runner(small_resnet, "auto", "fp32", "cpu")
    choice = runner.info["choice"]
    assert runner.backend == "torch" and choice.backend == "torch"
    assert "onnxruntime is not installed" in choice.rejected["onnxruntime/fp32"]
    assert "no other exact path builds here" in choice.reason
    assert "backend: torch fp32 (eager PyTorch, the reference)" in capsys.readouterr().err
    # a cached choice that cannot run any more (package removed since): eager, with a warning
    path = choice_path(small_resnet)
    path.write_text(json.dumps({**json.loads(path.read_text()), "backend": "onnxruntime"}))
    with pytest.warns(RuntimeWarning, match="cached backend choice onnxruntime/fp32 cannot run now.*torch/fp32"):
        assert make_runner(small_resnet, "auto", "fp32", "cpu").backend == "torch"


def test_tiny_models_are_not_probed_and_cpu_class_is_part_of_the_key(small_resnet, choices, monkeypatch):
    runner = make_runner(ColourModel(), "auto", "fp32", "cpu", announce=False)
    assert runner.backend == "torch" and "too small" in runner.info["choice"].reason
    assert not choices.exists()  # nothing cached for a model that costs microseconds
    monkeypatch.setenv("EMONET_CPU_FLAGS", "avx2,fma")  # how an AVX2-only CPU would key its choice
    avx2 = choice_path(small_resnet)
    monkeypatch.setenv("EMONET_CPU_FLAGS", "avx2,fma,avx512f,avx512_bf16,avx512_vnni")
    assert choice_path(small_resnet) != avx2 and avx2.parent == choices


def test_describe_line():
    choice = choice_module.BackendChoice("onnxruntime", speedup=1.84, max_abs=3e-6, chosen_on="2026-11-28 11:00",
                                         path="/home/u/.cache/emonet/choice/x.json")
    assert describe(choice).startswith("backend: onnxruntime fp32, exact (max |d| 3e-06), 1.84x eager; chosen on "
                                       "2026-11-28 11:00, cached in /home/u/.cache/emonet/choice/x.json")


def test_cli_default_prints_the_choice_once(official_checkpoint_8, sample_images_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "p.csv"
    env_cache = {"EMONET_CHOICE_CACHE": str(tmp_path / "choice")}
    import os
    import re

    from emonet.cli import main

    photo = str(sample_images_dir / "grace_hopper.jpg")
    # -X importtime: each import is logged on stderr as it ends, so the order of the lines shows what came first
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "emonet", "predict", photo,
                           "--no-detect", "--weights", str(official_checkpoint_8), "-o", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, **env_cache})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("backend: ") == 1 and str(tmp_path / "choice") in proc.stderr
    # the first progress line comes before PyTorch is imported (seconds), the probe's lines after it
    loading = proc.stderr.index(f"predict: loading PyTorch, {official_checkpoint_8} and the face detector...")
    assert loading < re.search(r"\|\s+torch\n", proc.stderr).start() < proc.stderr.index("backend probe: choosing")
    # the same checkpoint again: the cached choice, no probe; an explicit backend: no probe, nothing cached
    selection._ANNOUNCED.clear()
    monkeypatch.setenv("EMONET_CHOICE_CACHE", str(tmp_path / "choice"))
    assert main(["predict", photo, "--no-detect", "--weights", str(official_checkpoint_8), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "backend probe:" not in err and err.count("backend: ") == 1 and "cached in" in err
    monkeypatch.setenv("EMONET_CHOICE_CACHE", str(tmp_path / "explicit"))
    assert main(["predict", photo, "--no-detect", "--backend", "torch", "--weights", str(official_checkpoint_8),
                 "-o", str(out)]) == 0
    assert "backend" not in capsys.readouterr().err and not (tmp_path / "explicit").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Predictor(official_checkpoint_8, device="cpu", detector=None, backend="torch")
    import pandas as pd

    row = pd.read_csv(out).iloc[0]
    expected = ref.predict(sample_images_dir / "grace_hopper.jpg")[0]
    assert np.isclose(row["valence"], expected.valence, atol=1e-4) and row["expression"] == expected.expression


VALID_CHOICE = {"backend": "torch-opt", "precision": "fp32", "speedup": 1.3, "max_abs": 2e-6,
                "ms_per_face": {"torch/fp32": 10.0, "torch-opt/fp32": 7.7}, "rejected": {}, "reason": "r",
                "chosen_on": "2026-12-07 03:00", "probe_s": 4.2, "machine": {"cpu": "x"}}
CORRUPT_CHOICES = {
    "a list": "[]", "null": "null", "a number": "3", "not JSON": "{backend: torch", "empty": "",
    "string speed-up": json.dumps({**VALID_CHOICE, "speedup": "1.3"}),
    "NaN speed-up": json.dumps({**VALID_CHOICE, "speedup": float("nan")}),
    "negative speed-up": json.dumps({**VALID_CHOICE, "speedup": -2}),
    "boolean max_abs": json.dumps({**VALID_CHOICE, "max_abs": True}),
    "unknown backend": json.dumps({**VALID_CHOICE, "backend": "tensorrt"}),
    "no backend": json.dumps({k: v for k, v in VALID_CHOICE.items() if k != "backend"}),
    "text times": json.dumps({**VALID_CHOICE, "ms_per_face": {"torch/fp32": "fast"}}),
    "machine a list": json.dumps({**VALID_CHOICE, "machine": []}),
}


@pytest.mark.parametrize("content", CORRUPT_CHOICES)
def test_corrupt_cached_choices_are_ignored(small_resnet, choices, content):
    lines = []
    path = choice_path(small_resnet)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(VALID_CHOICE))
    assert choice_module.load_choice(path, lines.append).backend == "torch-opt" and not lines  # the valid form
    path.write_text(CORRUPT_CHOICES[content])
    assert choice_module.load_choice(path, lines.append) is None
    assert lines and str(path) in lines[0] and "probing again" in lines[0]


@pytest.mark.parametrize("content", ["a list", "string speed-up", "not JSON"])
def test_a_corrupt_cached_choice_is_rebuilt(small_resnet, choices, monkeypatch, content, capsys):
    path = choice_path(small_resnet)
    path.parent.mkdir(parents=True)
    path.write_text(CORRUPT_CHOICES[content])
    # the default path probes again (only eager and torch-opt here: no export) and writes a valid file over it
    monkeypatch.setattr(choice_module, "TINY_FORWARD_S", 0.0)
    monkeypatch.setattr(choice_module, "cpu_candidates", lambda: [("torch", "fp32"), ("torch-opt", "fp32")])
    runner = make_runner(small_resnet, "auto", "fp32", "cpu")
    assert not runner.info["choice"].cached and runner.backend in ("torch", "torch-opt")
    assert choice_module.valid_choice(json.loads(path.read_text())) == ""
    assert f"ignoring the {'unreadable' if content in ('not JSON', 'empty') else 'invalid'} cache file {path}" \
        in capsys.readouterr().err


@pytest.mark.parametrize("speeds", [[], None, {"speedup": {"torch/fp32": "1"}}, {"speedup": {}},
                                    {"speedup": {"torch/fp32": 1.0, "onnxruntime/fp32": float("inf")}},
                                    {"speedup": {"torch/fp32": 1.0}, "ms_per_face": {"torch/fp32": -1}}])
def test_corrupt_speed_records_are_ignored(speeds):
    assert choice_module.valid_speeds(speeds)
    assert choice_module.valid_speeds({"speedup": {"torch/fp32": 1.0, "onnxruntime/fp32": 2.5},
                                       "ms_per_face": {"torch/fp32": 9.0}, "measured_on": "now"}) == ""


def test_the_probe_says_what_it_does_and_a_cached_choice_says_nothing(small_resnet, choices, monkeypatch, capsys):
    monkeypatch.setattr(choice_module, "TINY_FORWARD_S", 0.0)
    monkeypatch.setattr(choice_module, "cpu_candidates", lambda: [("torch", "fp32"), ("torch-opt", "fp32")])
    make_runner(small_resnet, "auto", "fp32", "cpu")
    lines = capsys.readouterr().err.splitlines()
    probe_lines = [line for line in lines if line.startswith("backend probe: ")]
    assert probe_lines[0].startswith("backend probe: choosing the fastest exact inference path for resnet18_dual_head")
    assert any(line.startswith("backend probe: torch-opt/fp32: folding batch norms...") for line in probe_lines)
    assert any("torch-opt/fp32: exact (max |d|" in line for line in probe_lines)
    assert any(line.startswith("backend probe: timed: torch/fp32 ") for line in probe_lines)
    assert probe_lines[-1].startswith("backend probe: chose ") and lines[-1].startswith("backend: ")
    assert lines.index(probe_lines[-1]) < len(lines) - 1  # progress first, the choice line last
    selection._ANNOUNCED.clear()
    make_runner(small_resnet, "auto", "fp32", "cpu")  # cached: no probe, no progress
    assert "backend probe:" not in capsys.readouterr().err
    make_runner(small_resnet, "torch", "fp32", "cpu")  # explicit: never probes
    assert capsys.readouterr().err == ""


def test_timing_drops_paths_that_cannot_win():
    class Sleeper:
        def __init__(self, seconds: float) -> None:
            self.seconds, self.calls = seconds, 0

        def __call__(self, x):
            self.calls += 1
            import time

            time.sleep(self.seconds)

    slow, fast, close = Sleeper(0.06), Sleeper(0.01), Sleeper(0.011)
    times = choice_module._time_candidates({"torch/fp32": slow, "a/fp32": fast, "b/fp32": close}, torch.zeros(1))
    assert slow.calls == 1 and fast.calls == close.calls == choice_module.PROBE_ROUNDS
    assert len(times["torch/fp32"]) == 1 and len(times["a/fp32"]) == choice_module.PROBE_ROUNDS


class _FakeRunner:
    """A candidate that returns fixed outputs after sleeping ``seconds`` per face, recording each call in
    ``events`` (what the probe does, in order)."""

    def __init__(self, key: str, seconds: float, events: list) -> None:
        self.key, self.seconds, self.events = key, seconds, events

    def __call__(self, x: torch.Tensor) -> dict:
        import time

        self.events.append(("forward", self.key))
        time.sleep(self.seconds * len(x))
        n = len(x)
        return {"valence": np.full(n, 0.1), "arousal": np.full(n, -0.2), "expression": np.tile(np.arange(8.0), (n, 1))}


def _fake_probe(model, per_face: dict[str, float], candidates: list[str]):
    """:func:`choice_module.probe` over fake runners of the given seconds per face: the choice, the keys built
    and every event (report lines and forwards) in order."""
    events: list = []

    def build(backend: str, precision: str):
        events.append(("build", f"{backend}/{precision}"))
        return _FakeRunner(f"{backend}/{precision}", per_face[f"{backend}/{precision}"], events)

    choice, _ = choice_module.probe(model, build, candidates=[tuple(k.split("/")) for k in candidates],
                                    report=lambda line: events.append(("report", line)))
    return choice, [key for kind, key in events if kind == "build"], events


def test_the_first_progress_line_comes_before_any_forward(small_resnet):
    assert sum(p.numel() for p in small_resnet.parameters()) >= choice_module.ANNOUNCE_PARAMETERS
    choice, built, events = _fake_probe(small_resnet, {"torch/fp32": 0.02, "onnxruntime/fp32": 0.005},
                                        ["torch/fp32", "onnxruntime/fp32"])
    assert events[0][0] == "report" and events[0][1].startswith("choosing the fastest exact inference path")
    assert events.index(("forward", "torch/fp32")) > 0 and choice.backend == "onnxruntime"
    reports = [line for kind, line in events if kind == "report"]
    assert reports.count(events[0][1]) == 1  # said once, not again after the reference forward


def test_a_bounded_candidate_is_skipped_once_another_path_beats_its_ceiling(small_resnet):
    # onnxruntime's check run is 10x eager: torch-opt (at most GAIN_CEILING x) is never built (wide margins:
    # a busy machine's sleeps overshoot)
    fast = {"torch/fp32": 0.11, "onnxruntime/fp32": 0.005, "torch-opt/fp32": 0.1}  # eager: not tiny, no warm run
    order = ["torch/fp32", "torch-opt/fp32", "onnxruntime/fp32"]  # registry order: bounded ones go last anyway
    choice, built, events = _fake_probe(small_resnet, fast, order)
    assert built == ["torch/fp32", "onnxruntime/fp32"] and choice.backend == "onnxruntime"
    assert choice.rejected["torch-opt/fp32"].startswith("not tried: onnxruntime/fp32 already ran")
    assert any(kind == "report" and line.startswith("torch-opt/fp32: skipped (onnxruntime/fp32 already")
               for kind, line in events)
    assert "torch-opt/fp32" not in choice.ms_per_face
    # eager's reference run was 10x slower than onnxruntime's check: it is not timed again (one forward)
    assert events.count(("forward", "torch/fp32")) == 1 and choice.ms_per_face["torch/fp32"] >= 110
    # a path that does not beat eager by the ceiling (here: slower): the bounded candidate is built and timed
    close = {**fast, "onnxruntime/fp32": 0.2}
    choice, built, _ = _fake_probe(small_resnet, close, order)
    assert built == ["torch/fp32", "onnxruntime/fp32", "torch-opt/fp32"] and "torch-opt/fp32" in choice.ms_per_face


def test_the_timing_budget_is_respected(monkeypatch):
    class Sleeper:
        def __init__(self, seconds: float) -> None:
            self.seconds, self.calls = seconds, 0

        def __call__(self, x):
            import time

            self.calls += 1
            time.sleep(self.seconds)

    # two close paths, each round over the budget: two rounds, not PROBE_ROUNDS
    monkeypatch.setattr(choice_module, "PROBE_TIMING_BUDGET_S", 0.05)
    a, b = Sleeper(0.03), Sleeper(0.03)
    choice_module._time_candidates({"torch/fp32": a, "b/fp32": b}, torch.zeros(1))
    assert 1 <= max(a.calls, b.calls) <= 2 < choice_module.PROBE_ROUNDS


def _verdict_forms() -> dict:
    """Corrupt forms of a verdict file (applied to a real verdict)."""
    return {
        "a list": lambda v: [], "null": lambda v: None,
        "passed a string": lambda v: {**v, "passed": "yes"},
        "passed over failing figures": lambda v: {**v, "passed": True, "va_mean_abs": 0.9},
        "negative faces": lambda v: {**v, "n_faces": -1},
        "more stable than faces": lambda v: {**v, "n_stable": v["n_faces"] + 1},
        "another rule": lambda v: {**v, "rule": {**v["rule"], "va_mean_abs": 1.0}},
        "another backend": lambda v: {**v, "backend": "openvino"},
        "agreement above 1": lambda v: {**v, "passed": True, "expression_agreement": 1.5},
    }


@pytest.mark.parametrize("form", list(_verdict_forms()) + ["not JSON"])
def test_corrupt_cached_verdicts_are_measured_again(small_resnet, tmp_path, form):
    from emonet.inference.verify import VerificationSet, cached_verdict, verdict_path, verdict_problem

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(8)]
    runner = make_runner(small_resnet, "torch", "fp32", "cpu")
    measured = []

    def verification() -> VerificationSet:
        measured.append(1)
        return VerificationSet(small_resnet, crops)

    first = cached_verdict(small_resnet, "torch", "fp32", runner, tmp_path, verification)
    assert not first["cached"] and verdict_problem(json.loads(Path(first["path"]).read_text()), "torch", "fp32") == ""
    assert cached_verdict(small_resnet, "torch", "fp32", runner, tmp_path, verification)["cached"] and len(measured) == 1
    path = verdict_path(small_resnet, "torch", "fp32", tmp_path)
    stored = json.loads(path.read_text())
    path.write_text("{not json" if form == "not JSON" else json.dumps(_verdict_forms()[form](stored)))
    if form != "not JSON":
        assert verdict_problem(json.loads(path.read_text()), "torch", "fp32")
    again = cached_verdict(small_resnet, "torch", "fp32", runner, tmp_path, verification)
    assert not again["cached"] and len(measured) == 2 and again["passed"] == first["passed"]
    assert verdict_problem(json.loads(path.read_text()), "torch", "fp32") == ""

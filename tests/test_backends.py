"""Inference backends: agreement with the fp32 reference, ONNX Runtime cache, int8, availability/fallback."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

import emonet.devices as devices
import emonet.inference.runners as runners
from emonet.checkpoint import load_model
from emonet.devices import bf16_support
from emonet.inference.backends import TOLERANCES, BackendUnavailable, agreement, within_tolerance
from emonet.inference.int8 import cached_int8_path
from emonet.inference.onnx import check_inputs, quantize_int8, write_report
from emonet.inference.selection import make_runner
from emonet.inference.verify import verdict_path
from emonet.models import create_model
from emonet.models.surgery import _SplitInputConv, int8_ready_copy
from emonet.predictor import Predictor


@pytest.fixture(scope="module")
def model(official_checkpoint_8):
    return load_model(official_checkpoint_8, device="cpu")


@pytest.fixture(scope="module")
def faces(model) -> torch.Tensor:
    """Three natural images (the sample photos resized to 256), preprocessed."""
    return check_inputs(model, 3)


@pytest.fixture(scope="module")
def reference(model, faces) -> dict[str, np.ndarray]:
    return make_runner(model, "torch", "fp32", "cpu", with_heatmap=True)(faces)


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.getbasetemp() / "emonet-cache"  # shared by the tests of a session
    monkeypatch.setenv("EMONET_CACHE", str(folder))
    return folder


def assert_exact(out: dict, ref: dict, keys=("expression", "valence", "arousal", "heatmap")) -> None:
    acc = agreement(ref, out)
    assert set(keys) <= set(out)
    assert within_tolerance(acc["max_abs"], acc["scale"], TOLERANCES["fp32"]["max_abs"]), acc["max_abs"]


def test_torch_opt_fp32_matches_reference_and_leaves_model_alone(model, faces, reference):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = make_runner(model, "torch-opt", "fp32", "cpu", with_heatmap=True)
    # stem conv1/bn1, conv_last0/bn_end0, conv_last1/bn_end1 and the head's Linear/BatchNorm1d fold exactly
    assert runner.info["folded_batchnorms"] == 4 and runner.info["fast_blocks"] > 0
    assert runner.backend == "torch-opt" and runner.precision == "fp32"
    assert_exact(runner(faces), reference)
    # the caller's model is untouched (folding works on a copy)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.bn1, torch.nn.BatchNorm2d)
    # single-face batches work too, without heatmap unless asked
    single = make_runner(model, "torch-opt", "fp32", "cpu")(faces[:1])
    assert set(single) == {"expression", "valence", "arousal"} and single["valence"].shape == (1,)


def test_fold_batchnorm_on_dual_head_resnet():
    torch.manual_seed(0)
    model = create_model("resnet18_dual_head", input_size=64).eval()
    for m in model.modules():  # non-trivial statistics so that folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    ref = make_runner(model, "torch", "fp32", "cpu")(x)
    runner = make_runner(model, "torch-opt", "fp32", "cpu")
    assert runner.info["folded_batchnorms"] == 20  # every BatchNorm of a ResNet-18 follows a conv
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in runner.model.modules())
    assert_exact(runner(x), ref, keys=("expression", "valence", "arousal"))


@pytest.mark.skipif(not bf16_support(torch.device("cpu"))[0], reason="no native bf16 on this CPU")
@pytest.mark.parametrize("backend", ["torch", "torch-opt", "openvino"])
def test_bf16_within_documented_tolerance(model, faces, reference, backend, cache):
    out = make_runner(model, backend, "bf16", "cpu", with_heatmap=True, verify=False)(faces)  # the kernels only
    acc = agreement(reference, out)
    assert out["heatmap"].dtype == np.float32 and out["heatmap"].shape == (3, 68, 64, 64)
    assert acc["va_mean_abs"] <= TOLERANCES["bf16"]["va_mean_abs"], acc


def test_onnxruntime_fp32_matches_and_is_cached(model, faces, reference, cache):
    runner = make_runner(model, "onnxruntime", "fp32", "cpu", with_heatmap=True)
    assert runner.path.parent == cache / "onnx" and runner.path.exists()
    assert max(runner.info["report"]["max_abs_diff"].values()) <= 1e-4
    assert_exact(runner(faces), reference)
    assert_exact(runner(faces[:1]), {k: v[:1] for k, v in reference.items()})  # dynamic batch
    mtime = os.path.getmtime(runner.path)
    again = make_runner(model, "onnxruntime", "fp32", "cpu")  # no heatmap; reuses the cached file
    assert again.path == runner.path and os.path.getmtime(again.path) == mtime
    assert set(again(faces[:2])) == {"expression", "valence", "arousal"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto on CPU at fp32: the probed choice, exact whichever it is
        auto = make_runner(model, "auto", "fp32", "cpu", with_heatmap=True)
    assert auto.info["choice"].backend == auto.backend and auto.requested == ("auto", "fp32")
    assert_exact(auto(faces), reference)


def test_onnxruntime_int8_file_and_verdict_decide(model, faces, reference, cache):
    # Pre-build the cached int8 file with a tiny calibration set and no sensitivity pass (the backend's own
    # build runs the analysis of emonet.inference.int8: minutes for EmoNet), and write the rule's verdicts.
    path = cached_int8_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    calib = [np.ascontiguousarray((check_inputs(model, 2)[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
             for i in range(2)]
    write_report(path, quantize_int8(model, path, calibration_crops=calib, n_eval=0), model)  # hashes: checked
    verdict = verdict_path(model, "onnxruntime", "int8")
    verdict.parent.mkdir(parents=True, exist_ok=True)
    rule = {"va_mean_abs": 0.02, "expression_agreement": 0.97, "noise_grey_levels": 1, "min_stable_faces": 8}
    failing = {"n_faces": 32, "n_stable": 30, "va_mean_abs": 0.05, "va_max_abs": 0.2, "expression_agreement": 0.5,
               "passed": False, "rule": rule, "backend": "onnxruntime", "precision": "int8"}  # a valid verdict file
    verdict.write_text(json.dumps(failing))
    openvino_verdict = verdict_path(model, "openvino", "int8")  # auto's first int8 candidate on a CPU
    openvino_verdict.write_text(json.dumps({**failing, "backend": "openvino"}))
    # bf16 (the next candidates of auto/int8): passing verdicts, so that this test does not measure them
    for bf16_backend in ("openvino", "torch-opt"):
        verdict_path(model, bf16_backend, "bf16").write_text(json.dumps({**failing, "va_mean_abs": 0.01,
                                                                         "backend": bf16_backend, "precision": "bf16",
                                                                         "expression_agreement": 0.98, "passed": True}))
    with pytest.raises(BackendUnavailable, match="refused for this checkpoint.*agreement 50.0%.*30 of 32"):
        make_runner(model, "onnxruntime", "int8", "cpu")
    runner = make_runner(model, "onnxruntime", "int8", "cpu", with_heatmap=True, verify=False)
    out = runner(faces)
    assert runner.path == path and out["heatmap"].shape == (3, 68, 64, 64)
    assert all(np.isfinite(v).all() for v in out.values())
    assert agreement(reference, out)["va_mean_abs"] < 0.15  # int8 is close, not exact
    # auto: int8 only where this checkpoint's int8 file passed the rule; here it did not, so the next candidate
    with pytest.warns(RuntimeWarning, match="int8 is refused for this checkpoint.*agreement 50"):
        fallback = make_runner(model, "auto", "int8", "cpu")
    assert (fallback.backend, fallback.precision) != ("onnxruntime", "int8")
    verdict.write_text(json.dumps({**failing, "va_mean_abs": 0.004, "expression_agreement": 0.99, "passed": True}))
    with pytest.warns(RuntimeWarning, match="openvino/int8 is refused.*using onnxruntime/int8"):
        chosen = make_runner(model, "auto", "int8", "cpu")
    assert (chosen.backend, chosen.precision) == ("onnxruntime", "int8") and chosen.info["verification"]["passed"]
    # where OpenVINO's int8 passes too, auto takes it first: the same file, OpenVINO's kernels
    openvino_verdict.write_text(json.dumps({**failing, "va_mean_abs": 0.004, "expression_agreement": 0.99,
                                            "passed": True, "backend": "openvino"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = make_runner(model, "auto", "int8", "cpu")
    assert (chosen.backend, chosen.precision) == ("openvino", "int8") and chosen.path == path
    assert agreement(reference, chosen(faces))["va_mean_abs"] < 0.15


def test_split_input_conv_is_exact(model, faces, reference):
    prepared = int8_ready_copy(model)
    assert isinstance(prepared.conv1x1_input_emo_2, _SplitInputConv)
    assert prepared.conv1x1_input_emo_2.sizes == [256, 256, 256]  # stem + 2 attention-weighted stacks
    with torch.inference_mode():
        out = {k: v.numpy() for k, v in prepared(faces).items()}
    assert_exact(out, reference)
    with pytest.raises(ValueError, match="cannot split a conv of 768 input channels"):
        _SplitInputConv(model.conv1x1_input_emo_2, [256, 256])


class _Tiny(torch.nn.Module):
    """A small model with the project's output convention (compiles in seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        out = self.fc(self.features(x).mean((2, 3)))
        return {"expression": out[:, :2], "valence": out[:, 2], "arousal": out[:, 3]}


def test_torch_compile_backend_on_a_small_model():
    torch.manual_seed(0)
    model = _Tiny().eval()
    model.features[1].running_mean.uniform_(-0.5, 0.5)
    x = torch.rand(3, 3, 32, 32)
    ref = make_runner(model, "torch", "fp32", "cpu")(x)
    runner = make_runner(model, "torch-compile", "fp32", "cpu")
    assert runner.backend == "torch-compile" and runner.info["folded_batchnorms"] == 1
    assert_exact(runner(x), ref, keys=("expression", "valence", "arousal"))
    import torch._inductor.config as inductor_config

    assert inductor_config.freezing is False  # set per compile, not globally


def test_openvino_fp32_is_exact_on_the_checked_export(model, faces, reference, cache):
    runner = make_runner(model, "openvino", "fp32", "cpu", with_heatmap=True)
    onnx = make_runner(model, "onnxruntime", "fp32", "cpu")
    assert runner.path == onnx.path  # the same checked export, compiled by OpenVINO
    # fp32 means fp32 even on a bf16 CPU (OpenVINO's own default there is bf16)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert_exact(runner(faces), reference)
    assert_exact(runner(faces[:1]), {k: v[:1] for k, v in reference.items()})  # dynamic batch
    plain = make_runner(model, "openvino", "fp32", "cpu")
    assert set(plain(faces[:2])) == {"expression", "valence", "arousal"}


def test_openvino_unavailable_and_the_bf16_candidates(model, monkeypatch):
    from emonet.inference.selection import candidates

    cpu = torch.device("cpu")
    assert candidates("auto", "bf16", cpu)[:2] == [("openvino", "bf16"), ("torch-opt", "bf16")]
    assert ("openvino", "bf16") in candidates("auto", "int8", cpu)
    assert ("openvino", "bf16") not in candidates("auto", "bf16", torch.device("cuda"))
    monkeypatch.setattr(runners.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"openvino is not installed \(pip install openvino\)"):
        make_runner(model, "openvino", "fp32", "cpu")
    assert candidates("auto", "int8", cpu)[:2] == [("openvino", "int8"), ("onnxruntime", "int8")]
    assert ("openvino", "int8") not in candidates("auto", "int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="supports precision fp32, bf16, int8, not 'fp16'"):
        make_runner(model, "openvino", "fp16", "cpu")


def test_unavailable_backend_message_and_fallback(model, faces, reference, monkeypatch, tmp_path):
    monkeypatch.setattr(runners, "onnxruntime_status", lambda: (False, "onnxruntime is not installed (pip install onnx onnxruntime)"))
    with pytest.raises(BackendUnavailable, match="onnxruntime is not installed.*--backend auto"):
        make_runner(model, "onnxruntime", "fp32", "cpu")
    with pytest.warns(RuntimeWarning, match="onnxruntime/fp32 not available.*using torch-opt/fp32"):
        runner = make_runner(model, "onnxruntime", "fp32", "cpu", allow_fallback=True)
    assert (runner.backend, runner.precision) == ("torch-opt", "fp32")
    monkeypatch.setenv("EMONET_CHOICE_CACHE", str(tmp_path))  # a fresh probe: onnxruntime is ruled out
    runner = make_runner(model, "auto", "fp32", "cpu", with_heatmap=True)
    choice = runner.info["choice"]
    assert "onnxruntime is not installed" in choice.rejected["onnxruntime/fp32"]
    assert runner.backend in ("torch", "torch-opt") and choice.backend == runner.backend
    assert_exact(runner(faces), reference)


def test_bf16_unsupported_cpu_is_refused_then_falls_back(model, monkeypatch):
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(runners, "onnxruntime_status", lambda: (False, "onnxruntime is not installed"))
    with pytest.raises(BackendUnavailable, match="no native bf16"):
        make_runner(model, "torch-opt", "bf16", "cpu")
    with pytest.raises(BackendUnavailable, match="fp16 needs a GPU"):
        make_runner(model, "torch", "fp16", "cpu")
    with pytest.warns(RuntimeWarning, match="no native bf16.*using the default exact path"):
        runner = make_runner(model, "auto", "bf16", "cpu")
    assert runner.precision == "fp32" and runner.requested == ("auto", "bf16")


def test_no_fallback_without_permission_and_bad_names(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the explicit reference never warns
        assert make_runner(model, "torch", "fp32", "cpu").backend == "torch"
    with pytest.raises(ValueError, match="choose one of"):
        make_runner(model, "tensorrt", "fp32", "cpu")
    with pytest.raises(ValueError, match="supports precision fp32, int8, not 'bf16'"):
        make_runner(model, "onnxruntime", "bf16", "cpu")
    with pytest.raises(ValueError, match="use --backend onnxruntime or openvino or auto"):
        make_runner(model, "torch", "int8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            make_runner(model, "torch-opt", "fp16", "cuda")


def test_predictor_uses_backend(model, sample_images_dir):
    ref = Predictor(model, device="cpu", detector=None, landmarks=True, backend="torch")
    fast = Predictor(model, device="cpu", detector=None, landmarks=True, backend="torch-opt")
    image = sample_images_dir / "grace_hopper.jpg"
    a, b = ref.predict(image)[0], fast.predict(image)[0]
    assert abs(a.valence - b.valence) <= 1e-4 and abs(a.arousal - b.arousal) <= 1e-4
    assert a.expression == b.expression and np.abs(a.landmarks - b.landmarks).max() < 0.5


# -- the backend registry -----------------------------------------------------------------------------------------
class _CountingRunner(runners.TorchRunner):
    """A toy backend: eager PyTorch that records each batch size it ran (so the test sees it was used)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        self.batches.append(int(batch.shape[0]))
        return super().__call__(batch)


@pytest.fixture()
def toy_backend():
    from emonet.inference.backends import register_runner, unregister_backend

    register_runner("toy-eager", precisions=("fp32", "bf16"), cpu={"bf16": -1}, probe=True)(_CountingRunner)
    try:
        yield "toy-eager"
    finally:
        unregister_backend("toy-eager")


def test_a_registered_backend_is_a_choice_a_candidate_and_runs(model, faces, reference, toy_backend):
    from emonet.cli import command_parser
    from emonet.inference.backends import backend_names, backend_precisions, validate
    from emonet.inference.choice import cpu_candidates
    from emonet.inference.selection import candidates

    cpu = torch.device("cpu")
    assert toy_backend in backend_names() and backend_precisions(toy_backend) == ("fp32", "bf16")
    args = command_parser("predict", "predict").parse_args(["x.jpg", "--weights", "w.pth", "-o", "out.csv", "--backend", toy_backend])
    assert args.backend == toy_backend
    assert candidates("auto", "bf16", cpu)[0] == (toy_backend, "bf16")  # rank -1: before OpenVINO
    assert (toy_backend, "fp32") not in candidates("auto", "fp32", cpu)  # not an fp32 fallback
    assert (toy_backend, "fp32") in cpu_candidates()  # but probed by the default choice
    with pytest.raises(ValueError, match="supports precision fp32, bf16, not 'int8'"):
        validate(toy_backend, "int8")
    runner = make_runner(model, toy_backend, "fp32", "cpu", with_heatmap=True)
    assert isinstance(runner, _CountingRunner) and runner.backend == toy_backend
    assert_exact(runner(faces), reference)
    assert runner.batches == [len(faces)]


def test_backend_registry_refuses_clashes_and_forgets_on_unregister(toy_backend):
    from emonet.inference.backends import backend_names, declare_backend, register_runner, unregister_backend

    with pytest.raises(ValueError, match="already declared"):
        declare_backend("torch", ("fp32",), "emonet.inference.runners")
    with pytest.raises(ValueError, match="already has a runner"):
        register_runner(toy_backend)(runners.TorchRunner)
    with pytest.raises(ValueError, match="candidate precisions"):
        register_runner("toy-int8", precisions=("fp32",), cpu={"int8": 0})(runners.TorchRunner)
    unregister_backend("toy-int8")
    unregister_backend(toy_backend)
    assert toy_backend not in backend_names()
    with pytest.raises(ValueError, match="unknown backend 'toy-eager'"):
        make_runner(None, toy_backend, "fp32", "cpu")


def test_command_line_reads_backend_names_without_pytorch():
    """``predict --help`` lists the registered backends without importing PyTorch (fast start-up)."""
    import subprocess
    import sys

    code = ("import sys; from emonet.cli import build_parser; p = build_parser(['predict']); "
            "h = p._subparsers._group_actions[0].choices['predict'].format_help(); "
            "print('torch' in sys.modules, 'onnxruntime' in h and 'openvino' in h and 'torch-opt' in h)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]

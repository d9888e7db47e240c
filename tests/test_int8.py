"""The verification rule of reduced precisions and int8 with a per-block sensitivity analysis (real ONNX
Runtime quantisation, real face crops from the sample images)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import emonet.inference.verify as verify_module
from emonet.classes import EMONET_8_CLASSES
from emonet.devices import bf16_support
from emonet.inference.backends import (
    RULE_EXPRESSION_AGREEMENT,
    RULE_VA_MEAN_ABS,
    BackendUnavailable,
    rule_words,
    stable_faces,
    verify_rule,
)
from emonet.inference.int8 import build_int8, cached_int8_path, int8_settings, node_group
from emonet.inference.onnx import crops_to_batch, face_crops, make_session
from emonet.inference.selection import make_runner
from emonet.inference.verify import verdict_path


class OutlierModel(nn.Module):
    """A small conv net with one block that int8 cannot quantise: ``wide`` puts a channel of range ~1000
    beside channels of range ~1 that ``head`` reads, so one per-tensor uint8 scale wipes out what matters."""

    arch, multi_label, input_size, normalization = "int8-test", False, 32, None

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.class_names = list(EMONET_8_CLASSES)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.pre = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU())
        self.wide = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():
            self.wide.weight[0] *= 1000
            self.wide.bias[0] = 500
            self.head.weight[:, 0] = 0  # the head ignores the outlier channel

    def forward(self, x: torch.Tensor) -> dict:
        out = self.fc(self.head(self.wide(self.pre(self.stem(x)))).mean((2, 3)))
        return {"expression": out[:, :8] * 3, "valence": torch.tanh(out[:, 8]), "arousal": torch.tanh(out[:, 9])}


@pytest.fixture(scope="module")
def crops() -> dict[str, list[np.ndarray]]:
    return {"calibration": face_crops(8, seed=0), "selection": face_crops(16, seed=3, rotate=8.0)}


def _outputs(n: int, valence: np.ndarray, top: np.ndarray) -> dict[str, np.ndarray]:
    logits = np.zeros((n, 8), np.float32)
    logits[np.arange(n), top] = 2.0
    return {"expression": logits, "valence": valence.astype(np.float32), "arousal": np.zeros(n, np.float32)}


def test_rule_judges_only_faces_stable_under_one_grey_level():
    n = 10
    top = np.arange(n) % 8
    reference = _outputs(n, np.linspace(-0.5, 0.5, n), top)
    flipped = top.copy()
    flipped[[0, 1]] = 7 - flipped[[0, 1]]  # faces 0 and 1 flip under +1 grey level: fp32's own noise floor
    plus, minus = _outputs(n, np.linspace(-0.5, 0.5, n), flipped), reference
    assert stable_faces(reference, [plus, minus]).tolist() == [False, False] + [True] * 8
    # a candidate that disagrees only where fp32 itself is unstable, and is close on V/A: verified
    close = _outputs(n, np.linspace(-0.5, 0.5, n) + 0.01, flipped)
    figures = verify_rule(reference, [plus, minus], close)
    assert figures["passed"] and figures["n_stable"] == 8 and figures["n_faces"] == 10
    assert figures["expression_agreement"] == 1.0 and figures["va_mean_abs"] == pytest.approx(0.005, abs=1e-6)
    assert "8 of 10 face crops stable" in rule_words(figures) and "verified" in rule_words(figures)
    # V/A too far (mean 0.025 > 0.02 over V and A): refused, with the figures in words
    far = _outputs(n, np.linspace(-0.5, 0.5, n) + 0.05, top)
    figures = verify_rule(reference, [plus, minus], far)
    assert not figures["passed"] and figures["va_mean_abs"] > RULE_VA_MEAN_ABS
    assert "mean |dV/A| 0.025 (<= 0.02)" in rule_words(figures) and "FAILS" in rule_words(figures)
    # one stable face with another top class out of 8: 87.5% < 97%
    wrong = top.copy()
    wrong[5] = (wrong[5] + 1) % 8
    figures = verify_rule(reference, [plus, minus], _outputs(n, np.linspace(-0.5, 0.5, n), wrong))
    assert not figures["passed"] and figures["expression_agreement"] == 7 / 8 < RULE_EXPRESSION_AGREEMENT
    # too few stable faces: no verdict can be given, so the path is refused
    few = verify_rule(_outputs(3, np.zeros(3), np.arange(3)), [_outputs(3, np.zeros(3), np.arange(3))],
                      _outputs(3, np.zeros(3), np.arange(3)))
    assert not few["passed"] and "not verifiable: only 3 of 3" in rule_words(few)


def test_node_groups_and_cpu_class(monkeypatch):
    assert node_group("/model/m0/b1_4/bn1/Conv") == "m0/b1_4"
    assert node_group("/model/m0/b1_4/Concat") == "m0/b1_4"
    assert node_group("/model/conv2/downsample/downsample.0/Conv") == "conv2"
    assert node_group("/model/conv1/Conv") == "conv1"
    assert node_group("/model/conv1x1_input_emo_2/parts.1/Conv") == "conv1x1_input_emo_2"
    assert node_group("/model/emo_net_2/emo_net_2.0/conv3/Conv") == "emo_net_2/emo_net_2.0"
    model = OutlierModel()
    monkeypatch.setenv("EMONET_CPU_FLAGS", "avx2,fma")  # an AVX2-only CPU: 7-bit weights (no VNNI)
    assert int8_settings() == {"activations": "uint8", "weights": "int8", "per_channel": True,
                               "reduce_range": True, "cpu_class": "avx2"}
    avx2_path = cached_int8_path(model)
    monkeypatch.setenv("EMONET_CPU_FLAGS", "avx2,fma,avx512f,avx512_vnni")
    assert int8_settings()["reduce_range"] is False and int8_settings()["cpu_class"] == "vnni"
    assert cached_int8_path(model) != avx2_path and avx2_path.name.endswith("-int8-avx2.onnx")


def test_sensitivity_analysis_keeps_the_sensitive_blocks_in_fp32(tmp_path, crops):
    model = OutlierModel().eval()
    path = tmp_path / "outlier_int8.onnx"
    report = build_int8(model, path, calibration_crops=crops["calibration"], selection_crops=crops["selection"])
    acc = report.accuracy
    # everything in int8 fails the rule; each block quantised alone shows wide/head as the culprits
    ranking = [g for g, _ in acc["sensitivity"]]
    assert set(ranking) == {"stem/stem.0", "pre/pre.0", "wide", "head"} and set(ranking[:2]) == {"wide", "head"}
    assert acc["passed"] and set(acc["fp32_blocks"]) == {"wide", "head"}, acc["words"]
    assert acc["va_mean_abs"] <= RULE_VA_MEAN_ABS and acc["n_stable"] >= 8
    # the file: the fp32 blocks read plain float tensors, the others are quantised (QDQ), and it runs
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    assert producer[convs["/model/head/Conv"].input[0]] != "DequantizeLinear"
    assert producer[convs["/model/pre/pre.0/Conv"].input[0]] == "DequantizeLinear"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["fp32_blocks"]) == acc["fp32_blocks"] and meta["precision"] == "int8"
    session = make_session(path)
    x = crops_to_batch(model, crops["selection"][:4])
    expression, valence, arousal = session.run(["expression", "valence", "arousal"], {"input": x.numpy()})
    with torch.inference_mode():
        ref = model(x)
    assert np.abs(valence - ref["valence"].numpy()).max() < 0.05 and expression.shape == (4, 8)


def test_int8_runner_is_verified_and_refused_with_the_figures(monkeypatch, crops, emonet_cache_dir):
    monkeypatch.setattr(verify_module, "VERIFY_FACES", 12)
    model = OutlierModel().eval()
    runner = make_runner(model, "onnxruntime", "int8", "cpu")  # builds the file (sensitivity) and verifies it
    figures = runner.info["verification"]
    assert figures["passed"] and figures["n_faces"] == 12 and not figures["cached"], figures
    assert runner.info["report"]["accuracy"]["fp32_blocks"]  # the outlier blocks stayed fp32
    # the verdict is kept on disk: a second runner reads it back
    again = make_runner(model, "onnxruntime", "int8", "cpu")
    assert again.info["verification"]["cached"] and again.path == runner.path
    # a failing verdict (as a badly quantising checkpoint gets) refuses the path with its figures
    path = verdict_path(model, "onnxruntime", "int8")
    bad = {**json.loads(path.read_text()), "passed": False, "va_mean_abs": 0.095, "expression_agreement": 0.54}
    path.write_text(json.dumps(bad))
    verdict_path(model, "openvino", "int8").write_text(json.dumps({**bad, "backend": "openvino"}))  # tried first
    with pytest.raises(BackendUnavailable, match=r"onnxruntime/int8 is refused for this checkpoint: mean \|dV/A\| "
                                                 r"0\.095 \(<= 0\.02\), expression agreement 54\.0%.*FAILS"):
        make_runner(model, "onnxruntime", "int8", "cpu")
    with pytest.warns(RuntimeWarning, match="int8 is refused"):
        fallback = make_runner(model, "auto", "int8", "cpu")
    assert fallback.precision != "int8" and fallback.requested == ("auto", "int8")
    assert fallback.backend != "openvino" or fallback.precision != "int8"
    # a benchmark may still measure the unverified path, and it says so
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unverified = make_runner(model, "onnxruntime", "int8", "cpu", verify=False)
    assert "not verified" in unverified.info["verification"]


def test_openvino_int8_runs_the_same_int8_file_and_is_verified(monkeypatch, crops, tmp_path):
    monkeypatch.setenv("EMONET_CACHE", str(tmp_path))  # not the verdicts the test above made fail
    monkeypatch.setattr(verify_module, "VERIFY_FACES", 12)
    model = OutlierModel().eval()
    onnxruntime_int8 = make_runner(model, "onnxruntime", "int8", "cpu")
    runner = make_runner(model, "openvino", "int8", "cpu")
    assert runner.path == onnxruntime_int8.path  # one int8 recipe, one file; two sets of int8 kernels
    bf16 = bf16_support(torch.device("cpu"))[0]
    assert runner.info["float_precision"] == ("bf16" if bf16 else "f32")
    figures = runner.info["verification"]  # judged on its own, not on ONNX Runtime's verdict
    assert figures["backend"] == "openvino" and figures["precision"] == "int8" and figures["n_faces"] == 12
    assert figures["passed"], rule_words(figures)
    x = crops_to_batch(model, crops["selection"])
    ours, theirs = runner(x), onnxruntime_int8(x)
    assert ours["expression"].shape == (16, 8) and np.isfinite(ours["valence"]).all()
    # the same quantised graph: both kernels agree far closer than int8 is from fp32 (the outlier channel)
    assert np.abs(ours["valence"] - theirs["valence"]).max() < 0.02
    with torch.inference_mode():
        ref = model(x)
    assert np.abs(ours["valence"] - ref["valence"].numpy()).mean() <= RULE_VA_MEAN_ABS


@pytest.mark.skipif(not bf16_support(torch.device("cpu"))[0], reason="no native bf16 on this CPU")
def test_bf16_is_judged_by_the_same_rule(monkeypatch, emonet_cache_dir):
    monkeypatch.setattr(verify_module, "VERIFY_FACES", 12)
    model = OutlierModel().eval()
    try:
        runner = make_runner(model, "torch-opt", "bf16", "cpu")
        figures = runner.info["verification"]
        assert figures["passed"]
    except BackendUnavailable as exc:  # refused: the message carries the rule's figures
        assert "mean |dV/A|" in str(exc) and "stable under +-1 grey level" in str(exc)
        figures = json.loads(verdict_path(model, "torch-opt", "bf16").read_text())
    assert figures["n_faces"] == 12 and figures["rule"]["va_mean_abs"] == RULE_VA_MEAN_ABS

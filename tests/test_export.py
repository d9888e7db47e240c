"""ONNX export: round trip against PyTorch, dynamic batch, named outputs, metadata, cache, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import REPO_ROOT

from emonet.checkpoint import load_model, save_checkpoint
from emonet.cli import main
from emonet.inference.onnx import (
    ExportError,
    cached_onnx,
    check_inputs,
    export_onnx,
    file_sha256,
    model_fingerprint,
)
from emonet.models import create_model


@pytest.fixture(scope="module")
def model(official_checkpoint_8):
    return load_model(official_checkpoint_8, device="cpu")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "emonet", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(official_checkpoint_8, tmp_path_factory):
    """EmoNet exported by the CLI (the export API runs inside it)."""
    path = tmp_path_factory.mktemp("onnx") / "emonet_8.onnx"
    result = run_cli("export", "--weights", official_checkpoint_8, "--format", "onnx", "--output", path,
                     "--opset", "17", "--check")
    return path, result


@pytest.fixture(scope="module")
def small_dual_head():
    torch.manual_seed(0)
    return create_model("resnet18_dual_head", input_size=64).eval()


def run_onnx(path, x: torch.Tensor) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x.numpy()})))


def test_export_cli(exported):
    path, result = exported
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outputs: expression, valence, arousal, heatmap" in result.stdout and path.exists()
    line = next(s for s in result.stdout.splitlines() if "max abs diff" in s)
    assert "batches [1, 3]" in line and float(line.rsplit("(max ", 1)[1].rstrip(")")) <= 1e-4
    assert onnx.load(str(path)).opset_import[0].version == 17


def test_export_cli_int8_reports_its_verdict(official_checkpoint_8, model, tmp_path):
    path = tmp_path / "emonet_8_int8.onnx"
    summary = tmp_path / "report.json"
    result = run_cli("export", "--weights", official_checkpoint_8, "--output", path, "--precision", "int8",
                     "--summary-json", summary)
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = next(s for s in result.stdout.splitlines() if s.startswith("int8 on 24 held-out face crops"))
    assert ("within the documented tolerance" in verdict) != ("auto will not use int8" in verdict)
    assert "{" not in result.stdout  # a readable summary, not a raw dict; the figures go to --summary-json
    assert json.loads(summary.read_text())["accuracy"]["n_faces"] == 24
    bar = result.stderr.replace("\r", "\n")
    assert "int8 export: 100%" in bar and "evaluating against fp32" in bar  # minutes: a progress bar
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["precision"] == "int8" and meta["calibration_faces"] == "48"
    x = check_inputs(model, 2)
    with torch.inference_mode():
        ref = model(x)
    out = run_onnx(path, x)
    assert out["heatmap"].shape == (2, 68, 64, 64)
    assert np.abs(out["valence"] - ref["valence"].numpy()).max() < 0.5  # close to fp32, not exact


def test_emonet_round_trip_dynamic_batch(model, exported):
    path, _ = exported
    names = ["expression", "valence", "arousal", "heatmap"]
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["expression", "valence", "arousal", "heatmap"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["class_names"])[1] == "Happy" and meta["input_size"] == "256"
    for batch in (1, 3):  # independently of the export's own check
        x = check_inputs(model, batch)
        got = run_onnx(path, x)
        with torch.inference_mode():
            ref = model(x)
        assert got["heatmap"].shape == (batch, 68, 64, 64) and got["valence"].shape == (batch,)
        for name in names:
            assert np.abs(got[name] - ref[name].numpy()).max() <= 1e-4, name


def test_dual_head_round_trip(small_dual_head, tmp_path):
    model = small_dual_head
    report = export_onnx(model, tmp_path / "dual.onnx")
    assert report.outputs == ["expression", "valence", "arousal"]  # no heatmap for the ResNet model
    x = check_inputs(model, 3)  # ImageNet-normalised sample photos
    got = run_onnx(tmp_path / "dual.onnx", x)
    with torch.inference_mode():
        ref = model(x)
    assert got["expression"].shape == (3, 26)
    for name in report.outputs:
        assert np.abs(got[name] - ref[name].numpy()).max() <= 1e-4


def test_failed_check_leaves_no_file(small_dual_head, tmp_path):
    target = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch by more than 1e-15"):
        export_onnx(small_dual_head, target, tolerance=1e-15)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_cache_is_keyed_by_weights(model, small_dual_head, tmp_path, official_checkpoint_5):
    first, info = cached_onnx(small_dual_head, "fp32", tmp_path)
    assert info["max_abs_diff"] and first.with_suffix(".json").exists()
    assert first.name.startswith("resnet18_dual_head-") and first.parent == tmp_path / "onnx"
    mtime = first.stat().st_mtime
    again, _ = cached_onnx(small_dual_head, "fp32", tmp_path)
    assert again == first and again.stat().st_mtime == mtime
    other = load_model(official_checkpoint_5, device="cpu")
    assert model_fingerprint(other) != model_fingerprint(model)


def test_export_cli_errors_and_dual_head(tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "nope.pth"), "--output", str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    # a project checkpoint of the dual-head model exports through the same command (in-process: faster)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "dual.pth", create_model("resnet18_dual_head", input_size=64))
    assert main(["export", "--weights", str(ckpt), "--output", str(tmp_path / "dual.onnx")]) == 0
    out = capsys.readouterr().out
    assert "resnet18_dual_head" in out and "outputs: expression, valence, arousal;" in out
    assert (tmp_path / "dual.onnx").exists()


def _truncate(onnx_path, report_path, other):
    onnx_path.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 3])


def _swap_file(onnx_path, report_path, other):
    shutil.copyfile(other, onnx_path)  # another model's export under this model's name


def _swap_both(onnx_path, report_path, other):
    shutil.copyfile(other, onnx_path)
    shutil.copyfile(other.with_suffix(".json"), report_path)  # its (valid) report too: the weights hash differs


def _edit_report(**changes):
    def edit(onnx_path, report_path, other):
        report_path.write_text(json.dumps({**json.loads(report_path.read_text()), **changes}))
    return edit


CORRUPT_EXPORTS = {
    "truncated file": _truncate,
    "garbage file": lambda p, r, o: p.write_bytes(b"\x08\x07garbage" * 100),
    "another model's file": _swap_file,
    "another model's file and report": _swap_both,
    "report not JSON": lambda p, r, o: r.write_text('{"path": '),
    "report a list": lambda p, r, o: r.write_text("[]"),
    "report null": lambda p, r, o: r.write_text("null"),
    "report without hashes": lambda p, r, o: r.write_text(json.dumps({k: v for k, v in json.loads(r.read_text()).items()
                                                                     if not k.endswith("sha256")})),
    "text differences": _edit_report(max_abs_diff={"valence": "small"}),
    "no outputs": _edit_report(outputs=[]),
    "no check": _edit_report(max_abs_diff={}, checked_batch_sizes=[]),
    "report missing": lambda p, r, o: r.unlink(),
}


@pytest.fixture(scope="module")
def other_export(tmp_path_factory):
    """The export of another dual-head ResNet (other weights), to swap in."""
    torch.manual_seed(1)
    other = create_model("resnet18_dual_head", input_size=64).eval()
    path, _ = cached_onnx(other, "fp32", tmp_path_factory.mktemp("other"))
    return path


@pytest.mark.parametrize("damage", CORRUPT_EXPORTS)
def test_a_corrupt_or_swapped_export_is_rebuilt_never_used(small_dual_head, other_export, tmp_path, damage):
    path, info = cached_onnx(small_dual_head, "fp32", tmp_path)
    assert info["weights_sha256"] == model_fingerprint(small_dual_head) and info["file_sha256"] == file_sha256(path)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["weights_sha256"] == info["weights_sha256"]
    CORRUPT_EXPORTS[damage](path, path.with_suffix(".json"), other_export)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "rebuilding the cached export ...: <why>"
        again, rebuilt = cached_onnx(small_dual_head, "fp32", tmp_path)
    assert again == path and rebuilt["file_sha256"] == file_sha256(path) != file_sha256(other_export)
    x = check_inputs(small_dual_head, 2)
    with torch.inference_mode():
        ref = small_dual_head(x)
    assert np.abs(run_onnx(path, x)["valence"] - ref["valence"].numpy()).max() <= 1e-4  # this model's outputs


def test_a_swapped_export_is_named_in_the_warning(small_dual_head, other_export, tmp_path):
    path, _ = cached_onnx(small_dual_head, "fp32", tmp_path)
    _swap_file(path, path.with_suffix(".json"), other_export)
    with pytest.warns(RuntimeWarning, match=f"rebuilding the cached export {path}: the file's SHA-256 differs"):
        cached_onnx(small_dual_head, "fp32", tmp_path)
    _swap_both(path, path.with_suffix(".json"), other_export)
    with pytest.warns(RuntimeWarning, match="exported from other weights"):
        cached_onnx(small_dual_head, "fp32", tmp_path)

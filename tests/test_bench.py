"""The benchmark scripts run end to end (tiny settings) and write the JSON they promise."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from conftest import REPO_ROOT

from emonet.devices import bf16_support
from emonet.models import create_model


def run_bench(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_generated_weights_vary_across_inputs():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    from generated_weights import calibrate_batchnorm, set_pca_readout

    torch.manual_seed(0)
    model = create_model("emonet", n_expression=8)
    batches = [torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    calibrate_batchnorm(model, batches[:2])
    assert not model.training
    assert all(int(m.num_batches_tracked) == 2 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    set_pca_readout(model, batches[:2], seed=0)
    with torch.inference_mode():
        out = model(torch.cat(batches[:2]))
    # the readout is centred and scaled on these inputs: valence has std 0.4, arousal 0.33, logits vary
    assert abs(float(out["valence"].mean())) < 1e-3 and abs(float(out["valence"].std(unbiased=True)) - 0.4) < 1e-3
    assert abs(float(out["arousal"].std(unbiased=True)) - 0.33) < 1e-3
    assert float(out["expression"].std(0).min()) > 0.1


def test_bench_gpu_dry_run_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_bench(["bench/bench_gpu.py", "--device", "cpu", "--batch-sizes", "1", "--iters", "1", "--warmup", "1",
                      "--modes", "fp32,bf16", "--compile", "off", "--library", "auto", "--time-budget", "0",
                      "--calibration-images", "4", "--json", str(out)])
    result = json.loads(out.read_text())
    assert 33 < result["gflops_per_face"] < 35  # EmoNet: about 33.9 GFLOPs per face
    modes = {(r["mode"], r.get("runner")) for r in result["rows"]}
    assert ("fp32", None) in modes
    if bf16_support(torch.device("cpu"))[0]:  # the library's bf16 runner needs native bf16
        assert ("bf16", "torch-opt") in modes
    fp32 = next(r for r in result["rows"] if r["mode"] == "fp32")
    assert fp32["va_max_abs"] == 0 and fp32["expression_agreement"] == 1 and fp32["faces_per_s"] > 0
    assert "faces/s" in proc.stdout


def test_bench_inference_quick_run(tmp_path):
    out = tmp_path / "inference.json"
    proc = run_bench(["bench/bench_inference.py", "--configs", "auto:fp32", "--batch-sizes", "1", "--rounds", "1",
                      "--eval-faces", "4", "--video-frames", "0", "--cache-dir", str(tmp_path / "cache"),
                      "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["checkpoint"]["generated"] and "GENERATED" in result["checkpoint"]["label"]
    rows = {(c["backend"], c["precision"]): c for c in result["configs"]}
    assert set(rows) == {("torch", "fp32"), ("auto", "fp32")}
    assert rows["torch", "fp32"]["throughput"]["1"]["speedup"] == 1.0
    # the default path: the probed choice (cached under --cache-dir), exact against eager fp32
    default = rows["auto", "fp32"]
    assert default["verified"] and default["accuracy"]["va_max_abs"] < 1e-4
    assert default["choice"]["backend"] in ("torch", "torch-opt", "onnxruntime", "openvino") and not default["choice"]["cached"]
    assert list((tmp_path / "cache" / "choice").glob("emonet-*.json"))
    assert result["noise_floor"]["n_faces"] == 4
    # the machine as the issue asks: CPU model, the speed flags present and absent, the GPU
    machine = result["machine"]
    assert machine["cpu"] and set(machine["cpu_features"]) | set(machine["cpu_features_absent"]) >= {
        "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"}
    assert "CPU flags: " in proc.stdout and "GPU: " in proc.stdout and "side by side (batch 1" in proc.stdout
    assert result["targets"]["default_1.3x"]["config"].startswith("auto/fp32 = ")

"""ONNX export of the project's models, checked with ONNX Runtime, and int8 static quantisation.

* :func:`export_onnx` writes a model (EmoNet or the dual-head ResNet) as ONNX with a dynamic batch axis and
  named outputs ``expression``, ``valence``, ``arousal`` (+ ``heatmap`` for EmoNet), then runs the file with
  ONNX Runtime on batches of 1 and 3 and compares every output with PyTorch (max abs diff, fail above
  ``tolerance``, 1e-4 by default).
* :func:`quantize_int8` builds an int8 model (ONNX Runtime static quantisation, QDQ, per-channel weights)
  calibrated on real face crops (:func:`face_crops`: the sample faces shipped in installed packages,
  detected, cropped with EmoNet's protocol and augmented) and measures its accuracy on other crops.
* :func:`cached_onnx` is what the ``onnxruntime`` backend uses: exported/quantised files are kept under
  :func:`cache_dir` (``$EMONET_CACHE`` or ``~/.cache/emonet``), keyed by a hash of the weights. Each file's
  JSON report records the SHA-256 of the weights it was exported from and of the file itself; both are checked
  (:func:`export_problem`) before a cached file is used, and an invalid, truncated or swapped file is rebuilt.

The legacy TorchScript exporter (``dynamo=False``) is used: the default dynamo exporter needs the optional
``onnxscript`` package, which the project does not require.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from emonet.errors import UserError
from emonet.faces import FaceDetector, crop_region, crop_region_image
from emonet.fileio import atomic_path, write_json_atomic
from emonet.inference.backends import agreement, backend_precisions, within_tolerance
from emonet.models.registry import provides_landmarks
from emonet.models.surgery import int8_ready_copy
from emonet.preprocess import prepare_batch
from emonet.samples import FACE_SAMPLES, sample_image

OUTPUT_NAMES = ("expression", "valence", "arousal", "heatmap")
INPUT_NAME = "input"
DEFAULT_OPSET = 17
EXPORT_TOLERANCE = 1e-4
# Bump when the exported graph or the quantisation recipe changes: it invalidates cached files.
EXPORT_VERSION = 3  # 3: int8 convolves EmoNet's head input part by part (_SplitInputConv)


class ExportError(UserError, RuntimeError):
    """Export failed or the exported file does not reproduce the PyTorch outputs."""


@dataclass
class ExportReport:
    """What an export produced: file, outputs, the check against PyTorch and timings."""

    path: str
    opset: int
    precision: str
    outputs: list[str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per output, over the check batches
    checked_batch_sizes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    accuracy: dict[str, Any] = field(default_factory=dict)  # int8: agreement with fp32 on held-out faces

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- helpers ----------------------------------------------------------------------------------------------
def onnxruntime_status() -> tuple[bool, str]:
    """Whether ONNX Runtime (and onnx, for the export) can be imported, and why not."""
    try:
        import onnx  # noqa: F401  (optional dependencies: only probed here)
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return False, f"{exc.name or 'onnxruntime'} is not installed (pip install onnx onnxruntime)"
    return True, ""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Cache folder for exported files: ``path``, else ``$EMONET_CACHE``, else ``~/.cache/emonet``."""
    if path is None:
        path = os.environ.get("EMONET_CACHE") or Path.home() / ".cache" / "emonet"
    return Path(path).expanduser()


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's architecture description and weights (the cache key of exported files)."""
    h = hashlib.sha256()
    meta = {
        "class": type(model).__name__,
        "arch": getattr(model, "arch", None),
        "config": getattr(model, "config", None),
        "class_names": list(getattr(model, "class_names", []) or []),
        "input_size": getattr(model, "input_size", None),
        "normalization": getattr(model, "normalization", None),
    }
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def output_names(model: nn.Module, with_heatmap: bool = True) -> list[str]:
    """Named outputs of the exported graph: heatmap only for models that provide landmarks (return one)."""
    return list(OUTPUT_NAMES[:3]) + (["heatmap"] if with_heatmap and provides_landmarks(model) else [])


class _TupleOutputs(nn.Module):
    """ONNX needs positional outputs: the model's dict in :data:`OUTPUT_NAMES` order."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[name] for name in self.names)


def example_input(model: nn.Module, batch_size: int = 1, seed: int = 0) -> torch.Tensor:
    """A deterministic input of the model's size: [0, 1] pixels, standardised for normalised models."""
    size = int(getattr(model, "input_size", 256))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 3, size, size, generator=g)
    norm = getattr(model, "normalization", None)
    if norm:
        x = (x - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) / torch.tensor(norm["std"]).view(1, 3, 1, 1)
    return x


def _write_metadata(path: Path, model: nn.Module, extra: dict[str, Any]) -> None:
    """Store what a consumer needs to preprocess and read the outputs inside the ONNX file."""
    import onnx  # optional dependency (the onnx extra): imported only when a file is written

    proto = onnx.load(str(path))
    props = {
        "arch": str(getattr(model, "arch", type(model).__name__)),
        "class_names": json.dumps(list(getattr(model, "class_names", []))),
        "multi_label": json.dumps(bool(getattr(model, "multi_label", False))),
        "input_size": str(int(getattr(model, "input_size", 256))),
        "normalization": json.dumps(getattr(model, "normalization", None)),
        "input_range": "RGB pixel / 255" + (", then (x - mean) / std" if getattr(model, "normalization", None) else ""),
        "weights_sha256": model_fingerprint(model),  # which weights this graph holds (a swapped file shows)
        **{k: str(v) for k, v in extra.items()},
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _torch_export(wrapper: nn.Module, x: torch.Tensor, path: Path, names: list[str], opset: int) -> None:
    dynamic = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings():
        # The legacy exporter is deprecated in favour of dynamo (which needs onnxscript); EmoNet's input
        # check converts shapes to Python bools while tracing, harmless since shapes are fixed but the batch.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper, (x,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=names,
                dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
            )
        except TypeError:  # a torch without the legacy exporter: use dynamo (needs onnxscript)
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                wrapper, (x,), str(path), dynamo=True, input_names=[INPUT_NAME], output_names=names,
                dynamic_shapes={"x": {0: batch}}, opset_version=opset, external_data=False,
            )


def make_session(path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
    """An ONNX Runtime session (CPU, or CUDA when ``device`` is cuda and the CUDA provider is installed)."""
    import onnxruntime as ort  # optional dependency: imported only when a session is made

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def check_inputs(model: nn.Module, batch_size: int) -> torch.Tensor:
    """Natural images for the export check: the sample photos (resized, some mirrored), preprocessed.

    Natural images rather than white noise: noise is far outside what the model sees and exaggerates the
    harmless fp32 reordering differences of fine-tuned readouts. Falls back to smooth synthetic images.
    """
    size = int(getattr(model, "input_size", 256))
    try:
        pool = [cv2.resize(sample_image(n), (size, size), interpolation=cv2.INTER_LINEAR) for n in FACE_SAMPLES]
        images = [pool[i % len(pool)][:, ::-1] if (i // len(pool)) % 2 else pool[i % len(pool)] for i in range(batch_size)]
        return crops_to_batch(model, [np.ascontiguousarray(im) for im in images])
    except Exception:  # noqa: BLE001 - optional sample images: any failure means synthetic inputs
        g = torch.Generator().manual_seed(batch_size)
        x = torch.nn.functional.interpolate(torch.rand(batch_size, 3, 16, 16, generator=g), size=size, mode="bilinear")
        norm = getattr(model, "normalization", None)
        if norm:
            x = (x - torch.tensor(norm["mean"]).view(1, 3, 1, 1)) / torch.tensor(norm["std"]).view(1, 3, 1, 1)
        return x


def compare_with_torch(
    path: str | os.PathLike, model: nn.Module, batch_sizes: Sequence[int] = (1, 3), inputs: torch.Tensor | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Max abs difference per output between the ONNX file (ONNX Runtime, CPU) and the PyTorch model.

    Returns the differences and the largest magnitude of each PyTorch output (for a relative limit).
    """
    session = make_session(path)
    names = [o.name for o in session.get_outputs()]
    diffs, scales = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    model = model.eval()
    if inputs is not None:
        batches = [inputs]
    else:  # check_inputs(model, b) is the first b images of a larger batch: one PyTorch forward serves all
        batches = [check_inputs(model, max(batch_sizes))[:b] for b in batch_sizes]
    with torch.inference_mode():
        full = model(max(batches, key=len).to(next(model.parameters()).device))
    for x in batches:
        ref = {name: full[name][: len(x)] for name in names}
        got = session.run(names, {INPUT_NAME: x.cpu().numpy()})
        for name, value in zip(names, got):
            expected = ref[name].float().cpu().numpy()
            if value.shape != expected.shape:
                raise ExportError(f"{path}: output {name} has shape {value.shape}, PyTorch gives {expected.shape}")
            if value.size:
                diffs[name] = max(diffs[name], float(np.abs(value - expected).max()))
                scales[name] = max(scales[name], float(np.abs(expected).max()))
    return diffs, scales


# -- export -------------------------------------------------------------------------------------------------
def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = EXPORT_TOLERANCE,
    with_heatmap: bool = True,
    check_batch_sizes: Sequence[int] = (1, 3),
) -> ExportReport:
    """Export ``model`` (fp32, CPU) to ONNX with a dynamic batch axis and named outputs.

    With ``check`` the file is run by ONNX Runtime on ``check_batch_sizes`` and compared with PyTorch;
    :class:`ExportError` is raised (and no file is left at ``path``) when an output differs by more than
    ``tolerance`` (relative to the output's magnitude where it exceeds 1; inputs: the sample photos). The
    file is written atomically (temporary file, then rename).
    """
    start = time.perf_counter()
    path = Path(path)
    model = model.cpu().eval()
    names = output_names(model, with_heatmap)
    wrapper = _TupleOutputs(model, names).eval()  # eval: the exporter restores the wrapper's mode recursively
    with atomic_path(path) as tmp:
        try:
            _torch_export(wrapper, example_input(model, 2), tmp, names, opset)
        except Exception as exc:
            raise ExportError(f"{path}: ONNX export failed: {exc}") from exc
        model.eval()
        _write_metadata(tmp, model, {"opset": opset, "emonet_export_version": EXPORT_VERSION})
        report = ExportReport(str(path), opset, "fp32", names)
        if check:
            report.max_abs_diff, scales = compare_with_torch(tmp, model, check_batch_sizes)
            report.checked_batch_sizes = list(check_batch_sizes)
            if not within_tolerance(report.max_abs_diff, scales, tolerance):  # NaN fails too
                details = ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
                raise ExportError(f"{path}: exported model differs from PyTorch by more than {tolerance:g} ({details})")
    report.seconds = time.perf_counter() - start
    return report


# -- calibration / evaluation faces ---------------------------------------------------------------------
def face_crops(
    n: int = 48, seed: int = 0, size: int = 256, names: Sequence[str] | None = None, rotate: float = 0.0
) -> list[np.ndarray]:
    """``n`` RGB uint8 face crops (EmoNet protocol) from the sample faces shipped in installed packages.

    Faces (astronaut, Grace Hopper, camera) are detected with MediaPipe, cropped with EmoNet's protocol and
    augmented: horizontal flip, shift (up to 6% of the box), scale (0.92-1.08), brightness/contrast and,
    with ``rotate`` > 0, a rotation of up to ``rotate`` degrees. Different ``seed`` values give different
    augmentations (calibrate with one seed, evaluate with another).
    """
    names = list(names or FACE_SAMPLES)
    images, boxes = {}, {}
    with FaceDetector("auto") as detector:
        for name in names:
            image = sample_image(name)
            faces = detector.detect(image)
            if not faces:
                raise RuntimeError(f"no face detected in the sample image {name!r}")
            images[name], boxes[name] = image, faces[0].box
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        name = names[i % len(names)]
        x1, y1, x2, y2 = boxes[name]
        w, h = x2 - x1, y2 - y1
        dx, dy = rng.uniform(-0.06, 0.06, size=2) * (w, h)
        box = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        crop = crop_region_image(images[name], crop_region(box, size, float(rng.uniform(0.92, 1.08))))
        if rotate > 0:
            matrix = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(-rotate, rotate)), 1.0)
            crop = cv2.warpAffine(crop, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain, offset = rng.uniform(0.75, 1.25), rng.uniform(-25, 25)
        crop = np.clip(crop.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
        crops.append(np.ascontiguousarray(crop))
    return crops


def crops_to_batch(model: nn.Module, crops: Sequence[np.ndarray]) -> torch.Tensor:
    """Model input for face crops (the Predictor's preprocessing)."""
    return prepare_batch(crops, int(getattr(model, "input_size", 256)), getattr(model, "normalization", None))


# -- int8 ----------------------------------------------------------------------------------------------------
class _CropReader:
    """ONNX Runtime calibration reader over preprocessed batches."""

    def __init__(self, batch: torch.Tensor, batch_size: int = 2, on_batch: Callable[[], Any] | None = None) -> None:
        # batches of 2: MinMax ranges merge exactly across batches, and ONNX Runtime's peak memory while
        # calibrating grows with the batch (about 2.9 GB at 2, 8.1 GB at 8 for EmoNet)
        self._batches = [batch[i: i + batch_size].numpy() for i in range(0, len(batch), batch_size)]
        self._index = 0
        self._seen = 0  # batches handed out at least once (a rewind must not advance a progress bar twice)
        self._on_batch = on_batch

    def __len__(self) -> int:
        return len(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self._batches):
            return None
        self._index += 1
        if self._index > self._seen:
            self._seen = self._index
            if self._on_batch is not None:
                self._on_batch()
        return {INPUT_NAME: self._batches[self._index - 1]}

    def rewind(self) -> None:
        self._index = 0


def quantize_int8(
    model: nn.Module,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    n_calibration: int = 48,
    n_eval: int = 24,
    calibration_crops: Sequence[np.ndarray] | None = None,
    with_heatmap: bool = True,
    progress: bool = False,
) -> ExportReport:
    """Static int8 quantisation (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration).

    Calibrates on ``calibration_crops`` (default: :func:`face_crops` with ``n_calibration`` crops) and
    reports the accuracy against the fp32 PyTorch model on ``n_eval`` other augmented crops.
    The final fully-connected layers stay fp32 (negligible time, they carry valence/arousal directly).
    ``progress`` shows a tqdm bar on stderr (export, calibration batches, quantisation, evaluation batches):
    the whole takes minutes on a CPU.
    """
    # optional dependency: onnxruntime is imported only when a model is quantised
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = time.perf_counter()
    path = Path(path)
    model = model.cpu().eval()
    names = output_names(model, with_heatmap)
    prepared = int8_ready_copy(model)
    crops = list(calibration_crops) if calibration_crops is not None else face_crops(n_calibration, seed=0)
    calib = crops_to_batch(model, crops)
    bar = tqdm(desc="int8 export", unit="step", disable=not progress, file=sys.stderr)

    def step(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(1)

    reader = _CropReader(calib, on_batch=lambda: step("calibrating"))
    bar.total = 3 + len(reader) + (-(-n_eval // _EVAL_BATCH) if n_eval else 0)  # export, pre-process, quantise
    try:
        with tempfile.TemporaryDirectory(prefix="emonet-int8-") as tmpdir:
            fp32_path, pre_path = Path(tmpdir) / "fp32.onnx", Path(tmpdir) / "pre.onnx"
            _torch_export(_TupleOutputs(prepared, names).eval(), example_input(model, 2), fp32_path, names, opset)
            step("exported fp32 graph")
            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
            step("pre-processed")
            with atomic_path(path) as tmp:
                quantize_static(
                    str(pre_path), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=["Conv", "Concat", "Add", "MaxPool", "Resize", "AveragePool"],
                )
                step("quantised")
                _write_metadata(tmp, model, {"opset": opset, "emonet_export_version": EXPORT_VERSION,
                                             "precision": "int8", "calibration_faces": len(crops)})
                report = ExportReport(str(path), opset, "int8", names)
                if n_eval:
                    report.accuracy = evaluate_onnx(tmp, model, face_crops(n_eval, seed=1, rotate=8.0),
                                                    on_batch=lambda: step("evaluating against fp32"))
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


_EVAL_BATCH = 8


def evaluate_onnx(path: str | os.PathLike, model: nn.Module, crops: Sequence[np.ndarray],
                  on_batch: Callable[[], Any] | None = None) -> dict[str, float]:
    """Accuracy of an ONNX file against the fp32 PyTorch model on face crops (see :func:`agreement`);
    ``on_batch`` is called after each batch of 8 (a progress bar)."""
    batch = crops_to_batch(model, crops)
    session = make_session(path)
    names = [o.name for o in session.get_outputs()]
    got: dict[str, list[np.ndarray]] = {n: [] for n in names}
    ref: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(batch), _EVAL_BATCH):
        x = batch[i: i + _EVAL_BATCH]
        for name, value in zip(names, session.run(names, {INPUT_NAME: x.numpy()})):
            got[name].append(value)
        with torch.inference_mode():
            out = model(x)
        for name in names:
            ref[name].append(out[name].float().numpy())
        if on_batch is not None:
            on_batch()
    cat = {n: np.concatenate(v) for n, v in got.items()}
    return agreement({n: np.concatenate(v) for n, v in ref.items()}, cat, bool(getattr(model, "multi_label", False)))


# -- cache -----------------------------------------------------------------------------------------------------
def cached_onnx_path(
    model: nn.Module, precision: str = "fp32", directory: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET
) -> Path:
    """Where :func:`cached_onnx` keeps the file for ``model``: keyed by architecture, weights hash, opset."""
    return _export_path(model, model_fingerprint(model), precision, directory, opset)


def _export_path(model: nn.Module, weights_sha256: str, precision: str, directory: str | os.PathLike | None,
                 opset: int) -> Path:
    if precision not in backend_precisions("onnxruntime"):
        raise ValueError(f"ONNX precision must be {' or '.join(backend_precisions('onnxruntime'))}, got {precision!r}")
    arch = str(getattr(model, "arch", type(model).__name__))
    return cache_dir(directory) / "onnx" / f"{arch}-{weights_sha256[:20]}-v{EXPORT_VERSION}-op{opset}-{precision}.onnx"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_report(path: Path, report: ExportReport, model: nn.Module | None = None) -> dict[str, Any]:
    """Store an export report as JSON beside ``path`` (what the onnxruntime backend reads back), with the
    SHA-256 of the file and, given ``model``, of the weights it was exported from (checked before use)."""
    info = report.to_dict()
    info["file_sha256"] = file_sha256(path)
    if model is not None:
        info["weights_sha256"] = model_fingerprint(model)
    write_json_atomic(path.with_suffix(".json"), info)
    return info


def _finite_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for k, v in value.items())


def export_problem(path: Path, info: Any, weights_sha256: str, precision: str) -> str:
    """Why the cached export ``path`` with report ``info`` cannot be used for the weights ``weights_sha256``,
    or ``""``: the report's fields (types, the precision, the outputs, a passed check for fp32), the weights
    it was exported from, and the file's own SHA-256 (a truncated, edited or swapped file fails)."""
    if not isinstance(info, dict):
        return f"the report is not a JSON object ({type(info).__name__})"
    outputs = info.get("outputs")
    if not (isinstance(outputs, list) and all(isinstance(o, str) for o in outputs)
            and set(OUTPUT_NAMES[:3]) <= set(outputs)):
        return "the report's 'outputs' are missing or incomplete"
    if info.get("precision") != precision or type(info.get("opset")) is not int:
        return "the report's 'precision' or 'opset' is invalid"
    if not _finite_map(info.get("max_abs_diff")) or not isinstance(info.get("accuracy", {}), dict):
        return "the report's 'max_abs_diff' or 'accuracy' is invalid"
    if precision == "fp32" and not (info["max_abs_diff"] and info.get("checked_batch_sizes")):
        return "the report records no check against PyTorch"
    if info.get("weights_sha256") != weights_sha256:
        return "exported from other weights (or the weights hash is missing)"
    if info.get("file_sha256") != file_sha256(path):
        return "the file's SHA-256 differs from the one recorded at export (truncated, edited or swapped)"
    return ""


def read_export(path: Path, weights_sha256: str, precision: str) -> dict[str, Any] | None:
    """The report of the cached export ``path`` when the file and its report are valid for the weights
    ``weights_sha256`` (:func:`export_problem`); None when missing or invalid: the caller rebuilds it (the
    atomic rename replaces the bad file)."""
    try:
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        problem = export_problem(path, info, weights_sha256, precision)
    except (OSError, ValueError):  # missing, unreadable, not JSON, not valid UTF-8
        return None
    if problem:
        warnings.warn(f"rebuilding the cached export {path}: {problem}", RuntimeWarning, stacklevel=3)
        return None
    return info


def cached_onnx(
    model: nn.Module,
    precision: str = "fp32",
    directory: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
) -> tuple[Path, dict[str, Any]]:
    """Path of the exported (``fp32``) or quantised (``int8``) ONNX file for ``model``, created if missing.

    Files live in ``cache_dir(directory)/onnx`` named ``<arch>-<weights hash>-v<version>-op<opset>-<precision>.onnx``
    beside a JSON report (the export check or the int8 accuracy, the SHA-256 of the weights and of the
    file); returns both. A file or report that fails :func:`export_problem` is rebuilt, never used.
    """
    weights = model_fingerprint(model)  # once: the file's name and the report's check both need it
    path = _export_path(model, weights, precision, directory, opset)
    info = read_export(path, weights, precision)
    if info is not None:
        return path, info
    if precision == "fp32":
        # batches 1 and 2 check the dynamic batch axis at one forward less than the CLI's (1, 3)
        report = export_onnx(model, path, opset=opset, check=True, check_batch_sizes=(1, 2))
    else:
        report = quantize_int8(model, path, opset=opset)
    return path, write_report(path, report, model)

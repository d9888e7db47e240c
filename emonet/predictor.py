"""The one inference path: image(s) -> faces -> EmoNet-protocol crops -> model -> per-face predictions.

Used by ``python -m emonet predict``, the video engine, the demo, the review tool and the evaluation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from emonet.checkpoint import load_model
from emonet.faces import CropRegion, Face, FaceDetector, crop_region, crop_region_image
from emonet.images import read_image, to_rgb_uint8
from emonet.inference.runners import finite_rows, forward_with_flip
from emonet.inference.selection import make_runner
from emonet.landmarks import decode_heatmaps
from emonet.preprocess import logits_to_probabilities, prepare_batch

NON_FINITE_ERROR = "non-finite model output (NaN or inf): no valid prediction"


@dataclass
class FacePrediction:
    """Prediction for one face. ``box`` (x1, y1, x2, y2) in image pixels; valence/arousal clipped to [-1, 1]."""

    face: int
    box: tuple[float, float, float, float]
    score: float
    valence: float
    arousal: float
    expression: str
    probabilities: dict[str, float]
    landmarks: np.ndarray | None = field(default=None, repr=False)  # (68, 2) image pixels
    error: str = ""  # non-empty: the model's output was invalid; valence/arousal/probabilities are NaN

    def to_row(self) -> dict:
        row = {
            "face": self.face, "x1": self.box[0], "y1": self.box[1], "x2": self.box[2], "y2": self.box[3],
            "score": self.score, "valence": self.valence, "arousal": self.arousal, "expression": self.expression,
            "error": self.error,
        }
        row.update({f"p_{name}": p for name, p in self.probabilities.items()})
        return row


@dataclass
class CropBatchResult:
    """Arrays for N crops: valence/arousal (clipped), class probabilities, optional landmarks (crop pixels)."""

    valence: np.ndarray
    arousal: np.ndarray
    probabilities: np.ndarray
    landmarks: np.ndarray | None = None
    # False where the model produced a non-finite output: those values are NaN and carry no label
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = np.ones(len(self.valence), dtype=bool)

    def __len__(self) -> int:
        return len(self.valence)


def default_batch_size(device: str | torch.device) -> int:
    """Faces per forward pass when none is given: 32 on a GPU, 4 on a CPU.

    On a CPU, large batches are slower per face, not faster (EmoNet's 64x64x256 activations fall out of the
    cache): in ``bench/bench_inference.py`` 32 faces cost 1.2-1.9x more time per face than 1 on the eager
    PyTorch paths, while batches of 1-8 differ by less than the run-to-run noise.
    """
    return 4 if torch.device(device).type == "cpu" else 32


class Predictor:
    """Valence, arousal and expression for every face in an image.

    Args:
        weights: checkpoint path (official EmoNet file or project checkpoint) or an already loaded model.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
        detector: ``"auto"``/``"short"``/``"full"`` (MediaPipe model), a :class:`FaceDetector`, or ``None``
            to treat every image as an already cropped face.
        flip_tta: average valence/arousal over the crop and its mirror, as the official ``evaluate_flip``
            (expression probabilities come from the unflipped crop, as there).
        landmarks: also decode EmoNet's 68 landmarks (image coordinates).
        batch_size: faces per forward pass (default :func:`default_batch_size`: 32 on a GPU, 4 on a CPU).
        backend / precision: inference backend (see :mod:`emonet.inference.backends`).
        crop_expand: extra scale on the protocol crop (1.0 = EmoNet's training crop).
    """

    def __init__(
        self,
        weights: str | os.PathLike | nn.Module,
        device: str = "auto",
        detector: str | FaceDetector | None = "auto",
        flip_tta: bool = False,
        landmarks: bool = False,
        batch_size: int | None = None,
        backend: str = "torch",
        precision: str = "fp32",
        crop_expand: float = 1.0,
        min_face_score: float = 0.5,
    ) -> None:
        # load_model says when the file is missing; make_runner resolves the device (once) and places the model
        model = weights if isinstance(weights, nn.Module) else load_model(weights, device=None)
        self.model = model.eval()
        self.class_names: list[str] = list(model.class_names)
        self.multi_label = bool(getattr(model, "multi_label", False))
        self.input_size = int(getattr(model, "input_size", 256))
        self.normalization = getattr(model, "normalization", None)
        self.flip_tta, self.landmarks = flip_tta, landmarks
        self.crop_expand = crop_expand
        if landmarks and getattr(model, "arch", "") != "emonet":
            raise ValueError("landmarks are only available for EmoNet models (they come from its heatmaps)")
        self.runner = make_runner(model, backend=backend, precision=precision, device=device, with_heatmap=landmarks)
        self.batch_size = max(1, int(batch_size)) if batch_size else default_batch_size(self.runner.device)
        if isinstance(detector, str):
            detector = FaceDetector(model=detector, min_score=min_face_score)
        self.detector: FaceDetector | None = detector

    # -- crops ------------------------------------------------------------------------------------------
    def predict_crops(self, crops: Sequence[np.ndarray]) -> CropBatchResult:
        """Predict on face crops (RGB uint8, resized to the model input); batched by ``batch_size``."""
        parts: list[CropBatchResult] = []
        for start in range(0, len(crops), self.batch_size):
            batch = prepare_batch(crops[start: start + self.batch_size], self.input_size, self.normalization)
            parts.append(self._predict_tensor(batch))
        if not parts:
            n = len(self.class_names)
            return CropBatchResult(np.zeros(0), np.zeros(0), np.zeros((0, n)), np.zeros((0, 68, 2)) if self.landmarks else None,
                                   np.zeros(0, dtype=bool))
        return CropBatchResult(
            np.concatenate([p.valence for p in parts]),
            np.concatenate([p.arousal for p in parts]),
            np.concatenate([p.probabilities for p in parts]),
            np.concatenate([p.landmarks for p in parts]) if self.landmarks else None,
            np.concatenate([p.valid for p in parts]),
        )

    def _predict_tensor(self, batch: torch.Tensor) -> CropBatchResult:
        n = batch.shape[0]
        out = forward_with_flip(self.runner, batch, self.flip_tta)
        # A non-finite output (bad weights, overflow in reduced precision...) must not become a plausible value.
        valid = finite_rows(out)
        probs = np.where(valid[:, None], logits_to_probabilities(out["expression"], self.multi_label), np.nan)
        valence = np.where(valid, np.clip(out["valence"].astype(np.float64), -1.0, 1.0), np.nan)
        arousal = np.where(valid, np.clip(out["arousal"].astype(np.float64), -1.0, 1.0), np.nan)
        landmarks = None
        if self.landmarks:
            landmarks = np.where(valid[:, None, None], decode_heatmaps(out["heatmap"][:n], self.input_size), np.nan)
        return CropBatchResult(valence, arousal, probs, landmarks, valid)

    # -- images -----------------------------------------------------------------------------------------
    def locate(self, image: np.ndarray) -> tuple[list[Face], list[CropRegion | None], list[np.ndarray]]:
        """Faces, crop regions and crops of an RGB image (the whole image when there is no detector)."""
        if self.detector is None:
            h, w = image.shape[:2]
            return [Face((0.0, 0.0, float(w), float(h)), math.nan)], [None], [image]
        faces = self.detector.detect(image)
        regions = [crop_region(f.box, self.input_size, self.crop_expand) for f in faces]
        return faces, regions, [crop_region_image(image, r) for r in regions]

    def predict(self, image: np.ndarray | str | os.PathLike, channel_order: str = "rgb") -> list[FacePrediction]:
        """Predict every face of one image (array or path). Returns [] when no face is found."""
        return self.predict_many([image], channel_order)[0]

    def predict_many(
        self, images: Iterable[np.ndarray | str | os.PathLike], channel_order: str = "rgb"
    ) -> list[list[FacePrediction]]:
        """Predict several images, batching their faces together."""
        located = []
        for image in images:
            rgb = read_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb_uint8(image, channel_order)
            located.append((rgb.shape[:2], *self.locate(rgb)))
        crops = [c for _, _, _, cs in located for c in cs]
        result = self.predict_crops(crops)
        outputs, k = [], 0
        for shape, faces, regions, _ in located:
            preds = []
            for i, (face, region) in enumerate(zip(faces, regions)):
                preds.append(self._face_prediction(i, face, region, shape, result, k))
                k += 1
            outputs.append(preds)
        return outputs

    def _face_prediction(
        self, index: int, face: Face, region: CropRegion | None, shape: tuple[int, int], result: CropBatchResult, k: int
    ) -> FacePrediction:
        probs = result.probabilities[k]
        landmarks = None
        if result.landmarks is not None:
            points = result.landmarks[k]
            if region is None:  # whole image resized to the input: scale back
                h, w = shape
                points = np.stack([(points[:, 0] + 0.5) * w / self.input_size - 0.5,
                                   (points[:, 1] + 0.5) * h / self.input_size - 0.5], 1)
            else:
                points = region.to_image(points)
            landmarks = points
        valid = bool(result.valid[k])
        return FacePrediction(
            face=index,
            box=tuple(float(v) for v in face.box),
            score=float(face.score),
            valence=float(result.valence[k]),
            arousal=float(result.arousal[k]),
            expression=self.class_names[int(np.argmax(probs))] if valid else "",
            probabilities={name: float(p) for name, p in zip(self.class_names, probs)},
            landmarks=landmarks,
            error="" if valid else NON_FINITE_ERROR,
        )

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()

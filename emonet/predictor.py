"""The one inference path: image(s) -> faces -> EmoNet-protocol crops -> model -> per-face predictions.

Used by ``python -m emonet predict``, the video engine, the demo, the review tool and the evaluation.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from emonet.checkpoint import load_model, model_label
from emonet.crops import DEFAULT_CROP, FaceCrops, FaceMeshBoxes, check_crop_method, crop_faces, landmarks_region
from emonet.faces import CropRegion, Face, FaceDetector, crop_region_image
from emonet.images import ImageReadError, read_image, to_rgb_uint8
from emonet.inference.runners import finite_rows, forward_with_flip
from emonet.inference.selection import make_runner
from emonet.landmarks import decode_heatmaps
from emonet.models.registry import provides_landmarks
from emonet.preprocess import logits_to_probabilities, prepare_batch
from emonet.records import (  # noqa: F401 - NO_FACE_ERROR, CROP_COLUMNS: re-exported, imported from here
    CROP_COLUMNS,
    NO_FACE_ERROR,
    FaceRecord,
    face_rows,
    rows_to_dataframe,
    schema_columns,
)

NON_FINITE_ERROR = "non-finite model output (NaN or inf): no valid prediction"
MESH_FALLBACK_WARNING = (
    "FaceMesh found no face in a detector box: that face is cropped from the detector box (crop_method "
    "'detector'); later ones are only counted (Predictor.crop_fallbacks)"
)
# Likely-BGR heuristic: skin is redder than blue in virtually every photograph, so when the centre of the
# detected faces' crops is on average this much bluer than red (0-255 scale), the array was probably BGR
# (OpenCV's order). Measured on the sample faces: RGB -55 and -100, the same arrays as BGR +54 and +106,
# grayscale 0.
BGR_BLUE_EXCESS = 15.0
BGR_WARNING = (
    "the image array looks like BGR (faces are bluer than red), but it is read as RGB; pass "
    'channel_order="bgr" for OpenCV arrays (or channel_order="rgb" to silence this), or read files with '
    "emonet.images.read_image"
)


FacePrediction = FaceRecord  # the one face record (emonet.records); the name users know


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


def _crops_look_bgr(crops: Sequence[np.ndarray]) -> bool:
    """True when the centres of the face crops are, on average, markedly bluer than red (RGB order assumed)."""
    centres = [c[c.shape[0] // 4: 3 * c.shape[0] // 4, c.shape[1] // 4: 3 * c.shape[1] // 4] for c in crops]
    means = np.mean([c.reshape(-1, 3).mean(axis=0) for c in centres], axis=0)
    return bool(means[2] - means[0] > BGR_BLUE_EXCESS)


def prediction_columns(
    class_names: Sequence[str], landmarks: bool = False, key_columns: Sequence[str] = ("path",)
) -> list[str]:
    """Columns of the prediction table (CSV, JSON, Parquet, DataFrame), in order (:func:`emonet.records.schema_columns`)."""
    return schema_columns(class_names, [*key_columns, "face"], landmarks=landmarks)


# The one row builder (emonet.records): the ``predict`` command's files and :meth:`Predictor.predict_dataframe`.
prediction_rows = face_rows


def to_dataframe(results: Sequence[FacePrediction] | Sequence[Sequence[FacePrediction]]) -> pd.DataFrame:
    """DataFrame of ``Predictor.predict`` (one image) or ``predict_many`` (one list per image) results.

    Rows and columns as :meth:`Predictor.predict_dataframe`, with ``image_index`` the image's position.
    """
    per_image = [results] if results and isinstance(results[0], FaceRecord) else list(results)
    faces = [f for group in per_image for f in group]
    class_names = list(faces[0].probabilities) if faces else []
    landmarks = any(f.landmarks is not None for f in faces)
    rows = [r for i, group in enumerate(per_image) for r in face_rows({"image_index": i}, list(group))]
    return rows_to_dataframe(rows, prediction_columns(class_names, landmarks, ["image_index"]))


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
        weights: an official checkpoint's name (``"emonet_8"``, the default, or ``"emonet_5"``: downloaded on
            first use, see :func:`emonet.hub.resolve_weights`), a checkpoint path (official EmoNet file or project
            checkpoint) or an already loaded model.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
        detector: ``"auto"``/``"short"``/``"full"`` (MediaPipe model), a :class:`FaceDetector`, or ``None``
            to treat every image as an already cropped face.
        flip_tta: average valence/arousal over the crop and its mirror, as the official ``evaluate_flip``
            (expression probabilities come from the unflipped crop, as there).
        landmarks: also decode EmoNet's 68 landmarks (image coordinates).
        batch_size: faces per forward pass (default :func:`default_batch_size`: 32 on a GPU, 4 on a CPU).
        backend / precision: inference backend (see :mod:`emonet.inference.backends`); default ``auto``: at fp32
            on a CPU the fastest path exact within 1e-4 on this machine, probed once per checkpoint and cached,
            printed once on stderr (``runner.info["choice"]``); ``backend="torch"`` is the eager reference.
        crop_expand: extra scale on the protocol crop (1.0 = EmoNet's training crop).
        crop: where the crop of a detected face comes from (:mod:`emonet.crops`): ``"mesh"`` (default: the
            box of FaceMesh's iBUG-68 points, corrected; the detector box where FaceMesh finds no face,
            counted in ``crop_fallbacks``), ``"detector"`` (the detector box, the behaviour before this
            option) or ``"refine"`` (mesh crop, then a second crop from EmoNet's own 68 landmarks and a
            second forward: twice the model cost; EmoNet models only). Ignored without a detector.
    """

    def __init__(
        self,
        weights: str | os.PathLike | nn.Module = "emonet_8",
        device: str = "auto",
        detector: str | FaceDetector | None = "auto",
        flip_tta: bool = False,
        landmarks: bool = False,
        batch_size: int | None = None,
        backend: str = "auto",
        precision: str = "fp32",
        crop_expand: float = 1.0,
        min_face_score: float = 0.5,
        crop: str = DEFAULT_CROP,
    ) -> None:
        # an official name ("emonet_8", the default) is found or downloaded by load_model, which also says
        # when a file is missing; make_runner resolves the device (once) and places the model
        model = weights if isinstance(weights, nn.Module) else load_model(weights, device=None)
        self.model = model.eval()
        self.model_label = model_label(model)  # which model ran, from its card (predict and the app show it)
        self.class_names: list[str] = list(model.class_names)
        self.multi_label = bool(getattr(model, "multi_label", False))
        self.input_size = int(getattr(model, "input_size", 256))
        self.normalization = getattr(model, "normalization", None)
        self.flip_tta, self.landmarks = flip_tta, landmarks
        self.crop_expand = crop_expand
        # what the model offers (model.provides_landmarks), never its architecture's name
        arch = getattr(model, "arch", type(model).__name__)
        if landmarks and not provides_landmarks(model):
            raise ValueError(f"landmarks: a {arch} model does not predict landmarks (provides_landmarks is False; "
                             "EmoNet's come from its heatmaps)")
        self.crop = check_crop_method(crop)
        if crop == "refine" and not provides_landmarks(model):
            raise ValueError(f"crop 'refine' re-crops from the model's own 68 landmarks, which a {arch} model does "
                             "not predict (provides_landmarks is False); use crop 'mesh'")
        refine = crop == "refine" and detector is not None
        self.runner = make_runner(model, backend=backend, precision=precision, device=device,
                                  with_heatmap=landmarks or refine)
        self.batch_size = max(1, int(batch_size)) if batch_size else default_batch_size(self.runner.device)
        if isinstance(detector, str):
            detector = FaceDetector(model=detector, min_score=min_face_score)
        self.detector: FaceDetector | None = detector
        # one FaceMesh graph per predictor, reused for every face (building one costs far more than a face)
        self.mesh: FaceMeshBoxes | None = FaceMeshBoxes() if detector is not None and crop != "detector" else None
        self.crop_fallbacks = 0  # faces cropped from the detector box because FaceMesh found none
        self._warned_bgr = False

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
    def crop_faces(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> FaceCrops:
        """Crop regions, crops and crop method of the face ``boxes`` (detector or tracker boxes, image pixels)
        of RGB uint8 ``image`` with this predictor's ``crop`` method; the one place faces are cropped (the
        predictor's images and the video engine's frames). For ``refine`` these are the first (mesh) crops:
        :meth:`predict_face_crops` re-crops them after the first forward."""
        cropped = crop_faces(image, boxes, self.crop, self.mesh, self.input_size, self.crop_expand)
        if cropped.fallbacks:
            if not self.crop_fallbacks:  # once per predictor: a video must not flood the log
                warnings.warn(MESH_FALLBACK_WARNING, UserWarning, stacklevel=2)
            self.crop_fallbacks += cropped.fallbacks
        return cropped

    def predict_face_crops(self, images: Sequence[np.ndarray], crops: Sequence[FaceCrops]) -> CropBatchResult:
        """Predict the faces of :meth:`crop_faces` of several images in one batch (faces in order).

        With ``crop="refine"``: a first forward gives EmoNet's 68 landmarks of each face, the face is cropped
        again from their box (``crops`` are updated in place: regions, crops, method ``refine``) and predicted
        again. A face whose first landmarks are not finite keeps its first crop.
        """
        flat = [c for group in crops for c in group.crops]
        if self.crop != "refine" or self.detector is None or not flat:
            return self.predict_crops(flat)
        first = self._crop_landmarks(flat)
        k = 0
        for image, group in zip(images, crops):
            for i, region in enumerate(group.regions):
                points = first[k]
                k += 1
                if region is None or not np.isfinite(points).all():
                    continue
                group.regions[i] = landmarks_region(region.to_image(points), self.input_size, self.crop_expand)
                group.crops[i] = crop_region_image(image, group.regions[i])
                group.methods[i] = "refine"
        return self.predict_crops([c for group in crops for c in group.crops])

    def _crop_landmarks(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """EmoNet's 68 landmarks (crop pixels) of each crop: refine's first forward (no flip: only the points
        are used). NaN where the output is not finite."""
        parts = []
        for start in range(0, len(crops), self.batch_size):
            batch = prepare_batch(crops[start: start + self.batch_size], self.input_size, self.normalization)
            out = forward_with_flip(self.runner, batch, False)
            valid = finite_rows(out) & np.isfinite(out["heatmap"]).reshape(len(batch), -1).all(axis=1)
            parts.append(np.where(valid[:, None, None], decode_heatmaps(out["heatmap"], self.input_size), np.nan))
        return np.concatenate(parts)

    def locate(self, image: np.ndarray) -> tuple[list[Face], FaceCrops]:
        """Faces and their crops (:meth:`crop_faces`) of an RGB image; without a detector, the whole image
        is the one face (region ``None``, method ``none``)."""
        if self.detector is None:
            h, w = image.shape[:2]
            return [Face((0.0, 0.0, float(w), float(h)), math.nan)], FaceCrops([None], [image], ["none"])
        faces = self.detector.detect(image)
        return faces, self.crop_faces(image, [f.box for f in faces])

    def predict(
        self, image: np.ndarray | str | os.PathLike, channel_order: str | None = None
    ) -> list[FacePrediction]:
        """Predict every face of one image (array or path). Returns [] when no face is found.

        ``channel_order``: ``"rgb"`` or ``"bgr"`` for arrays; ``None`` (default) reads them as RGB and warns
        once per predictor when the faces look BGR (see :data:`BGR_BLUE_EXCESS`).
        """
        return self.predict_many([image], channel_order)[0]

    def predict_many(
        self, images: Iterable[np.ndarray | str | os.PathLike], channel_order: str | None = None
    ) -> list[list[FacePrediction]]:
        """Predict several images, batching their faces together."""
        rgbs, guessed = [], False
        for image in images:
            rgb, unsure = self._as_rgb(image, channel_order)
            rgbs.append(rgb)
            guessed |= unsure
        return self._predict_rgb(rgbs, check_bgr=guessed)

    def predict_dataframe(
        self, images_or_paths: Iterable[np.ndarray | str | os.PathLike], channel_order: str | None = None
    ) -> pd.DataFrame:
        """One row per face, with the columns of the ``predict`` command's CSV (see :func:`prediction_rows`).

        Paths fill the ``path`` column, arrays an ``image_index`` column (their position in the input; both
        columns when both are given). An unreadable image or one without a face gets one row with ``error``.
        Images are processed ``batch_size`` at a time, so a long list of paths is never all in memory.
        """
        items = list(images_or_paths)
        is_path = [isinstance(item, (str, os.PathLike)) for item in items]
        rows: list[dict] = []
        for start in range(0, len(items), self.batch_size):
            keys, rgbs, errors, guessed = [], [], [], False
            for i in range(start, min(start + self.batch_size, len(items))):
                keys.append({"path": str(items[i])} if is_path[i] else {"image_index": i})
                try:
                    rgb, unsure = self._as_rgb(items[i], channel_order)
                    guessed |= unsure
                    rgbs.append(rgb)
                    errors.append("")
                except (ImageReadError, ValueError, OSError) as exc:  # an error row, as the CLI writes
                    rgbs.append(None)
                    errors.append(str(exc))
            results = iter(self._predict_rgb([r for r in rgbs if r is not None], check_bgr=guessed))
            for key, rgb, error in zip(keys, rgbs, errors):
                rows += prediction_rows(key, None if rgb is None else next(results), error)
        key_columns = (["path"] if any(is_path) else []) + (["image_index"] if not all(is_path) else [])
        return rows_to_dataframe(rows, prediction_columns(self.class_names, self.landmarks, key_columns or ["path"]))

    def _as_rgb(self, image: np.ndarray | str | os.PathLike, channel_order: str | None) -> tuple[np.ndarray, bool]:
        """RGB uint8 of a path or array, and whether its channel order was assumed (colour array, no order given)."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(image), False
        array = np.asarray(image)
        guessed = channel_order is None and array.ndim == 3 and array.shape[2] in (3, 4)
        return to_rgb_uint8(array, channel_order or "rgb"), guessed

    def _predict_rgb(self, rgbs: Sequence[np.ndarray], check_bgr: bool = False) -> list[list[FacePrediction]]:
        located = [self.locate(rgb) for rgb in rgbs]
        crops = [c for _, cropped in located for c in cropped.crops]
        if check_bgr and crops and not self._warned_bgr and _crops_look_bgr(crops):
            self._warned_bgr = True  # once per predictor: a loop over video frames must not flood the log
            warnings.warn(BGR_WARNING, UserWarning, stacklevel=3)
        result = self.predict_face_crops(rgbs, [cropped for _, cropped in located])
        outputs, k = [], 0
        for rgb, (faces, cropped) in zip(rgbs, located):
            preds = []
            for i, (face, region) in enumerate(zip(faces, cropped.regions)):
                pred = self._face_prediction(i, face, region, rgb.shape[:2], result, k)
                if region is not None:
                    pred.crop_x0, pred.crop_y0, pred.crop_side = region.x0, region.y0, region.side
                pred.crop_method = cropped.methods[i]
                preds.append(pred)
                k += 1
            outputs.append(preds)
        return outputs

    def face_crops(self, image: np.ndarray, faces: Sequence[FacePrediction]) -> list[np.ndarray]:
        """The model-input crops (RGB uint8, ``input_size`` square) of ``faces`` predicted on RGB ``image``.

        The square each prediction records (``crop_x0``, ``crop_y0``, ``crop_side``: whatever its crop method),
        cut as in prediction, or the whole image resized without a detector: the pixels the model saw.
        """
        if self.detector is None:
            resized = cv2.resize(image, (self.input_size, self.input_size), interpolation=cv2.INTER_LINEAR)
            return [resized for _ in faces]
        return [crop_region_image(image, CropRegion(f.crop_x0, f.crop_y0, f.crop_side, self.input_size)) for f in faces]

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
        if self.mesh is not None:
            self.mesh.close()

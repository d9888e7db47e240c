"""Crop methods: which square of the image EmoNet sees for a detected face (``detector``, ``mesh``, ``refine``).

EmoNet was trained on the square built from the bounding box of the 68 iBUG landmarks (see
:mod:`emonet.faces`: ``scale = (w + h) / 220``, side ``200 * scale``). What differs between the methods is
only the box that protocol starts from:

* ``detector``: the MediaPipe detector box (the project's behaviour before ``--crop``). It includes the
  forehead, so the face is shifted down and zoomed out in the crop.
* ``mesh``: MediaPipe FaceMesh on a region around the detector box; the box of the 68 FaceMesh points that
  correspond to the iBUG-68 layout (:data:`MESH_68_INDICES`), widened by :data:`MESH_BOX_CORRECTION`.
  Falls back to ``detector`` (counted, with a warning) when FaceMesh finds no face there.
* ``refine``: ``mesh`` first; then EmoNet's own 68 landmarks (decoded from its heatmaps, the definition it
  was trained on) give the box of a second crop, and EmoNet predicts again (two forwards per face). Run by
  :class:`emonet.predictor.Predictor`, which owns the model; this module gives :func:`landmarks_region`.

Measured by the issue that introduced these methods (issue 19) on 596 AffectNet validation faces with their
annotated 68 landmarks, IoU of the crop square with the training crop square of the true landmarks (median,
10th percentile): detector box 0.818 (0.668); FaceMesh-68 box 0.906 (0.773); FaceMesh-68 box with the
per-edge correction 0.924 (0.796). FaceMesh found a face in 799 of 800 images. Those indices and that
correction were measured with the issue author's subset; this mapping follows the same layout (jaw contour,
brows, nose, eyes, lips) but was not re-measured on AffectNet here (no dataset on this machine).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np

from emonet.faces import CROP_SIZE, CropRegion, crop_region, crop_region_image, landmark_box
from emonet.nativelogs import configure_native_logs, native_stderr_silenced

CROP_METHODS = ("detector", "mesh", "refine")
DEFAULT_CROP = "mesh"

# iBUG-68 point i -> MediaPipe FaceMesh (468-point topology) index, in the iBUG order. The subject's right
# side is the image's left. The one place this mapping lives; every index belongs to the matching region
# of mediapipe's face_mesh_connections (FACEMESH_FACE_OVAL, *_EYEBROW, FACEMESH_NOSE, *_EYE, FACEMESH_LIPS),
# which tests/test_crops.py checks.
MESH_JAW = (234, 93, 132, 58, 172, 136, 150, 176, 152, 400, 379, 365, 397, 288, 361, 323, 454)  # 0-16, chin = 152
MESH_BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)  # 17-21 right brow outer->inner, 22-26 left inner->outer
MESH_NOSE = (168, 197, 5, 1, 98, 97, 2, 326, 327)  # 27-30 bridge top -> tip, 31-35 nostrils right -> left
MESH_EYES = (33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380)  # 36-41 right eye, 42-47 left eye
MESH_LIPS = (61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # 48-59 outer contour from the right corner
             78, 81, 13, 311, 308, 402, 14, 178)  # 60-67 inner contour from the right corner
MESH_68_INDICES: tuple[int, ...] = MESH_JAW + MESH_BROWS + MESH_NOSE + MESH_EYES + MESH_LIPS
assert len(MESH_68_INDICES) == 68 and len(set(MESH_68_INDICES)) == 68

# Per-edge correction of the FaceMesh-68 box towards the iBUG-68 box, as fractions of that box's width (left,
# right) and height (top, bottom): left -0.021 w, top +0.014 h, right +0.012 w, bottom +0.036 h. Measured in
# issue 19 on 596 AffectNet validation faces (median IoU with the training crop 0.906 -> 0.924).
MESH_BOX_CORRECTION = (-0.021, 0.014, 0.012, 0.036)

# FaceMesh runs on a square of about twice the detector box (crop side 200 * (w + h) / 220 * 1.1), resized to
# MESH_REGION_SIZE pixels: enough context for FaceMesh's own face detector, small enough to cost a few ms.
MESH_REGION_EXPAND = 1.1
MESH_REGION_SIZE = 256
MESH_MAX_FACES = 3  # a neighbouring face may show in the region; the one centred in the detector box is kept


def mesh68_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """Box of the iBUG-68 subset of FaceMesh points (N >= 468, pixels), with :data:`MESH_BOX_CORRECTION`."""
    points = np.asarray(points, dtype=np.float64)
    x1, y1, x2, y2 = landmark_box(points[list(MESH_68_INDICES)])
    w, h = x2 - x1, y2 - y1
    left, top, right, bottom = MESH_BOX_CORRECTION
    return x1 + left * w, y1 + top * h, x2 + right * w, y2 + bottom * h


def landmarks_region(landmarks: np.ndarray, size: int = CROP_SIZE, expand: float = 1.0) -> CropRegion:
    """The training crop of 68 landmarks (image pixels): what ``refine`` re-crops from EmoNet's own points."""
    return crop_region(landmark_box(landmarks), size, expand)


def region_iou(a: CropRegion, b: CropRegion) -> float:
    """Intersection over union of two square regions (image pixels)."""
    ix = max(0, min(a.x0 + a.side, b.x0 + b.side) - max(a.x0, b.x0))
    iy = max(0, min(a.y0 + a.side, b.y0 + b.side) - max(a.y0, b.y0))
    inter = ix * iy
    return inter / float(a.side * a.side + b.side * b.side - inter)


CROP_SQUARE_COLOR = (200, 200, 200)  # BGR: a light grey dashed square, distinct from the track colours


def draw_crop_square(image: np.ndarray, x0: int, y0: int, side: int, color: tuple[int, int, int] = CROP_SQUARE_COLOR,
                     dash: int = 6) -> np.ndarray:
    """Draw the crop square ``[x0, x0 + side) x [y0, y0 + side)`` as a dashed outline on ``image`` (in place;
    the parts outside the image are skipped). Returns ``image``."""
    x1, y1 = x0 + side - 1, y0 + side - 1
    for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        for start in range(0, length, 2 * dash):
            t0, t1 = start / max(length, 1), min(start + dash, length) / max(length, 1)
            p0 = (round(a[0] + (b[0] - a[0]) * t0), round(a[1] + (b[1] - a[1]) * t0))
            p1 = (round(a[0] + (b[0] - a[0]) * t1), round(a[1] + (b[1] - a[1]) * t1))
            cv2.line(image, p0, p1, color, 1, cv2.LINE_AA)
    return image


def start_face_mesh(max_faces: int, refine_landmarks: bool, min_confidence: float) -> Any:
    """A static-image MediaPipe FaceMesh whose graph has started (building one costs far more than a face:
    keep it and reuse it; ``close()`` it when done). Its start-up log lines are silenced (emonet.nativelogs)."""
    configure_native_logs()
    import mediapipe as mp  # lazy: slow to import; the detector crop, the CSV-only paths and --help never need it

    with native_stderr_silenced():
        mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=refine_landmarks,
            min_detection_confidence=min_confidence,
        )
        mesh.process(np.zeros((64, 64, 3), np.uint8))  # returns once the graph has started (and logged)
    return mesh


_Owner = TypeVar("_Owner", bound="NativeResources")


class NativeResources:
    """Base of objects that own native resources (MediaPipe graphs, detectors, video readers) in the attributes
    named by ``_resources``: :meth:`close` closes each (in that order) and drops it, so closing twice is
    harmless. A context manager."""

    _resources: tuple[str, ...] = ()

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in self._resources:
            resource = getattr(self, name, None)
            if resource is not None:
                resource.close()
                setattr(self, name, None)


class FaceMeshBoxes(NativeResources):
    """The ``mesh`` box of detected faces: one reusable FaceMesh graph (building one costs far more than a
    face); thread-safe (one lock around MediaPipe). Use as a context manager or call :meth:`close`."""

    _resources = ("_mesh",)

    def __init__(self, min_confidence: float = 0.5) -> None:
        self._mesh = start_face_mesh(MESH_MAX_FACES, refine_landmarks=False, min_confidence=min_confidence)
        self._lock = threading.Lock()
        self._seen_face = False

    def landmarks(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray | None:
        """FaceMesh points (468, 2) in image pixels of the face in detector ``box`` of RGB uint8 ``image``.

        ``None`` when FaceMesh finds no face whose centre lies inside ``box``.
        """
        if self._mesh is None:
            raise RuntimeError("FaceMeshBoxes is closed")
        region = crop_region(box, MESH_REGION_SIZE, MESH_REGION_EXPAND)
        patch = crop_region_image(image, region)
        with self._lock:
            if self._seen_face:
                result = self._mesh.process(patch)
            else:  # the landmark calculators log once, on the first face they see
                with native_stderr_silenced():
                    result = self._mesh.process(patch)
                self._seen_face = bool(result.multi_face_landmarks)
        if not result.multi_face_landmarks:
            return None
        x1, y1, x2, y2 = map(float, box)
        best, best_distance = None, np.inf
        for face in result.multi_face_landmarks:
            points = region.to_image(np.array([(p.x * region.size, p.y * region.size) for p in face.landmark]))
            cx, cy = points[:, 0].mean(), points[:, 1].mean()
            if not (x1 <= cx <= x2 and y1 <= cy <= y2):  # another face of the region, not this one
                continue
            distance = (cx - (x1 + x2) / 2) ** 2 + (cy - (y1 + y2) / 2) ** 2
            if distance < best_distance:
                best, best_distance = points, distance
        return best

    def box(self, image: np.ndarray, box: Sequence[float]) -> tuple[float, float, float, float] | None:
        """The corrected FaceMesh-68 box of the face in detector ``box`` (``None``: FaceMesh found none)."""
        points = self.landmarks(image, box)
        return None if points is None else mesh68_box(points)


@dataclass
class FaceCrops:
    """The crops of one image's faces: square ``regions`` (image pixels), the ``crops`` cut from them (RGB
    uint8, model input size), the ``methods`` that made each (``detector`` where ``mesh`` fell back), and
    how many faces fell back."""

    regions: list[CropRegion]
    crops: list[np.ndarray]
    methods: list[str]
    fallbacks: int = 0

    def __len__(self) -> int:
        return len(self.regions)


def check_crop_method(method: str) -> str:
    """``method`` if it is one of :data:`CROP_METHODS`, else a ValueError naming the choices."""
    if method not in CROP_METHODS:
        raise ValueError(f"crop must be one of {', '.join(CROP_METHODS)}, got {method!r}")
    return method


def crop_faces(
    image: np.ndarray, boxes: Sequence[Sequence[float]], method: str, mesh: FaceMeshBoxes | None = None,
    size: int = CROP_SIZE, expand: float = 1.0,
) -> FaceCrops:
    """Crop each detector box of RGB uint8 ``image`` with ``method`` (``refine`` gives its first, ``mesh``,
    crop here; the predictor re-crops after the first forward). ``mesh`` is required unless ``detector``."""
    check_crop_method(method)
    regions, methods, fallbacks = [], [], 0
    for box in boxes:
        used, start = "detector", tuple(float(v) for v in box)
        if method != "detector":
            if mesh is None:
                raise ValueError(f"crop {method!r} needs a FaceMeshBoxes")
            found = mesh.box(image, start)
            if found is None:
                fallbacks += 1
            else:
                used, start = method, found
        regions.append(crop_region(start, size, expand))
        methods.append(used)
    return FaceCrops(regions, [crop_region_image(image, r) for r in regions], methods, fallbacks)

"""Video valence/arousal datasets, one item per annotated frame: AFEW-VA, Aff-Wild2 (ABAW VA track), a
generic per-frame CSV.

Every reader ends as a table of annotated frames (:attr:`VideoFrameDataset.frames`: ``video``, ``frame``
(0-based frame index in the video), ``time_s``, ``valence``/``arousal`` in [-1, 1], ``path`` = the image of
the frame or the video file it is decoded from) and returns items as :mod:`emonet.evaluation` expects::

    {"image": RGB uint8 face crop, "valence": float32 tensor, "arousal": float32 tensor, "index": int,
     "path": str}

Faces are cropped with EmoNet's training protocol (:mod:`emonet.faces`): from the dataset's own 68 landmarks
(AFEW-VA, ``crop="landmarks"``), from the MediaPipe detector (``crop="detect"`` = ``"mesh"``: the FaceMesh-68
box of the detected face, or ``"detector"``: its detector box, see :mod:`emonet.crops`; consecutive frames of a
video are followed by :class:`emonet.tracking.IoUTracker`, as the video engine does), or used as they are
(``crop="none"``: Aff-Wild2's ``cropped_aligned`` faces). A frame without a face (missing from
``cropped_aligned``, nothing detected) raises :class:`FrameUnavailable` (an image read error), which the
evaluation keeps as an error row naming the frame instead of a number.

Layouts (see docs/video-evaluation.md):

* AFEW-VA: ``<root>/001/00000.png ...`` and ``<root>/001/001.json`` =
  ``{"frames": {"00000": {"valence": int, "arousal": int, "landmarks": [[x, y] x 68]}}}``; V/A integers in
  [-10, 10] are divided by 10. Splits: ``all``, ``train`` (clips 1-360), ``val`` (361-480), ``test``
  (481-600), or clip numbers (``"1-300"``, ``"5,7,9-12"``).
* Aff-Wild2: ``<root>/Annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt`` (header
  ``valence,arousal``; line i+1 = frame i; ``-5`` = no valid annotation, skipped) with
  ``<root>/cropped_aligned/<video>/00001.jpg`` (1-based) or the raw videos anywhere under ``<root>``
  (``<name>.mp4``/``.avi``...; ``<name>_left``/``<name>_right`` annotate the left/right face of ``<name>``).
* video-csv: a CSV with ``video, frame, valence, arousal`` (optional ``time``, ``split``, ``path``, ``shot``:
  the 0-based shot number of the frame, when the cuts are known; else the evaluation finds them); frames
  come from ``path`` (an image per row), from ``<frames-root>/<video>/`` (a file whose number is the frame)
  or from a video file ``<frames-root>/<video>.<ext>``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from emonet.crops import FaceMeshBoxes, NativeResources, crop_faces
from emonet.data.fixtures import write_afew_va_fixture, write_affwild2_fixture
from emonet.data.registry import register_dataset
from emonet.errors import UserError
from emonet.faces import FaceDetector, crop_from_landmarks
from emonet.images import IMAGE_EXTENSIONS, MAX_IMAGE_SIDE, ImageReadError, read_image
from emonet.tracking import IoUTracker

VIDEO_DATASETS = ("afew-va", "affwild2", "video-csv")
# detect = the detected face cropped with the project's default method (mesh), as the image datasets do;
# detector / mesh: see emonet.crops.
DETECT_MODES = ("detect", "detector", "mesh")
CROP_MODES = ("landmarks", "none", *DETECT_MODES)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
AFFWILD2_INVALID = -5.0
AFFWILD2_SPLITS = {"train": "Train_Set", "val": "Validation_Set", "validation": "Validation_Set",
                   "test": "Test_Set"}
# The split by clip number most papers use for AFEW-VA (say which one a number comes from).
AFEW_VA_SPLITS = {"train": (1, 360), "val": (361, 480), "test": (481, 600)}
AFEW_VA_FPS = 25.0  # the clips come from films (AFEW); frame times only matter to time-aware smoothing
DEFAULT_FPS = 30.0


class VideoLayoutError(UserError, ValueError):
    """A video dataset's files do not follow its layout (the message names the file)."""


class FrameUnavailable(ImageReadError):
    """An annotated frame has no face to score (missing crop, nothing detected): an error row, not a number."""


def parse_clip_selection(text: str, names: dict[str, tuple[int, int]] | None = None) -> set[int] | None:
    """``"all"`` -> None (every clip); a split name of ``names``; or clip numbers ``"1-300"``, ``"5,7,9-12"``."""
    text = str(text).strip().lower()
    if text in ("", "all"):
        return None
    if names and text in names:
        lo, hi = names[text]
        return set(range(lo, hi + 1))
    chosen: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            known = ", ".join(["all", *(names or {})])
            raise ValueError(f"split {text!r}: expected {known} or clip numbers such as 1-300 or 5,7,9-12")
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        chosen.update(range(lo, hi + 1))
    return chosen


# -- frames of raw videos ----------------------------------------------------------------------------------

class _SequentialVideo:
    """Frames of one video file read forward (reopened only when asked for an earlier frame): evaluation
    asks for the frames of a video in order, so each is decoded once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.capture: Any = None
        self.position = 0  # index of the next frame read() returns

    def _open(self) -> None:
        self.close()
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise ImageReadError(f"{self.path}: cannot open the video (not a video, corrupt, or a codec OpenCV lacks)")
        self.position = 0

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as RGB uint8; every frame before it (from the last one read) is decoded."""
        if self.capture is None or index < self.position:
            self._open()
        image = None
        while self.position <= index:
            ok, image = self.capture.read()
            if not ok or image is None:
                raise FrameUnavailable(f"{self.path}: frame {index} cannot be decoded (the video has "
                                       f"{self.position} readable frames)")
            self.position += 1
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None


def video_fps(path: str | os.PathLike, default: float = DEFAULT_FPS) -> float:
    """The frame rate a video file declares (``default`` when it declares none)."""
    capture = cv2.VideoCapture(str(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0) if capture.isOpened() else 0.0
    finally:
        capture.release()
    return fps if np.isfinite(fps) and 1.0 <= fps <= 1000.0 else default


class FaceFollower:
    """Which detected face of a video to score, frame after frame (detector + :class:`IoUTracker`).

    ``side``: ``"left"``/``"right"`` keeps the face on that side of the frame (Aff-Wild2's ``_left``/``_right``
    videos annotate one of two people); ``None`` keeps the largest face. Once chosen, the face is followed by
    its track ID; when its track is lost, the rule chooses again.
    """

    def __init__(self, side: str | None = None) -> None:
        if side not in (None, "left", "right"):
            raise ValueError(f"side must be None, 'left' or 'right', got {side!r}")
        self.side = side
        self.tracker = IoUTracker(max_missed=5)
        self.target: int | None = None

    def choose(self, boxes: Sequence[Sequence[float]], scores: Sequence[float], width: int) -> int | None:
        """Index (into ``boxes``) of the face to score in this frame, or None."""
        ids = self.tracker.update(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), list(scores))
        if not ids:
            return None
        if self.target in ids:
            return ids.index(self.target)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        centres = (boxes[:, 0] + boxes[:, 2]) / 2.0
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        if self.side == "left":
            pick = int(np.argmin(centres))
            ok = len(boxes) > 1 or centres[pick] < width / 2.0  # a lone face on the other side is the other person
        elif self.side == "right":
            pick = int(np.argmax(centres))
            ok = len(boxes) > 1 or centres[pick] >= width / 2.0
        else:
            pick, ok = int(np.argmax(areas)), True
        if not ok:
            return None
        self.target = ids[pick]
        return pick


# -- the dataset -------------------------------------------------------------------------------------------

class VideoFrameDataset(NativeResources, Dataset):
    """Annotated frames of videos, in video then frame order (see the module docstring).

    Args:
        frames: ``video``, ``frame``, ``time_s``, ``valence``, ``arousal``, ``path`` (+ ``source``:
            ``image``/``video``, + ``missing``: bool) — one row per annotated frame.
        landmarks: (N, 68, 2) per row for ``crop="landmarks"``.
        crop: ``landmarks`` | ``detect`` | ``none``.
        sides: ``{video: "left"|"right"}`` for the detector.
        name, source: for messages; ``dropped``: rows left out while reading (reason -> count).
    """

    _resources = ("_video", "_detector", "_mesh")  # opened per process on first use (see __getstate__)

    def __init__(self, frames: pd.DataFrame, crop: str, name: str, source: str,
                 landmarks: np.ndarray | None = None, sides: dict[str, str] | None = None,
                 dropped: dict[str, int] | None = None, fps: dict[str, float] | None = None,
                 transform: Any = None) -> None:
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
        if crop == "landmarks" and landmarks is None:
            raise ValueError(f"{source}: crop='landmarks' needs the dataset's landmarks (this layout has none); "
                             "use --crop detect")
        frames = frames.reset_index(drop=True)
        for column, default in (("source", "image"), ("missing", False)):
            if column not in frames:
                frames[column] = default
        if (frames["source"] == "video").any() and crop not in DETECT_MODES:
            raise ValueError(f"{source}: frames decoded from video files need --crop detect (the face must be found)")
        self.frames, self.crop, self.name, self.source = frames, crop, name, source
        self.landmarks = landmarks
        self.sides = dict(sides or {})
        self.dropped = dict(dropped or {})
        self.fps = dict(fps or {})
        self.transform = transform
        self.paths = frames["path"].astype(str).tolist()
        self._video: _SequentialVideo | None = None
        self._detector: FaceDetector | None = None
        self._mesh: FaceMeshBoxes | None = None
        self.mesh_fallbacks = 0  # faces cropped from the detector box because FaceMesh found none
        self._followers: dict[str, FaceFollower] = {}
        self._last: tuple[str, int] | None = None
        self.last_box: tuple[float, float, float, float] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def videos(self) -> list[str]:
        return list(dict.fromkeys(self.frames["video"]))

    @property
    def needs_main_process(self) -> bool:
        """Detection (MediaPipe) and sequential decoding keep state across items: no DataLoader workers."""
        return self.crop in DETECT_MODES

    def summary(self) -> dict[str, Any]:
        missing = int(self.frames["missing"].sum())
        out = {"name": self.name, "source": self.source, "videos": len(self.videos), "frames": len(self),
               "missing_frames": missing, "crop": self.crop, "dropped": dict(self.dropped)}
        if self.crop in ("detect", "mesh"):
            out["mesh_fallbacks"] = self.mesh_fallbacks
        return out

    def subset_videos(self, videos: Sequence[str]) -> VideoFrameDataset:
        """The same dataset restricted to ``videos`` (frames keep their order)."""
        keep = self.frames["video"].isin(list(videos)).to_numpy()
        return VideoFrameDataset(
            self.frames[keep].copy(), self.crop, self.name, self.source,
            None if self.landmarks is None else self.landmarks[keep], self.sides, self.dropped, self.fps,
            self.transform)

    def head(self, n: int) -> VideoFrameDataset:
        """The first ``n`` annotated frames (a quick check)."""
        keep = np.arange(len(self)) < int(n)
        return VideoFrameDataset(
            self.frames[keep].copy(), self.crop, self.name, self.source,
            None if self.landmarks is None else self.landmarks[keep], self.sides, self.dropped, self.fps,
            self.transform)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_video=None, _detector=None, _mesh=None, _followers={}, _last=None)  # per process
        return state

    def frame_image(self, index: int) -> np.ndarray:
        """The whole image of annotated frame ``index`` (RGB uint8) as the dataset provides it (the frame, or
        the face crop for Aff-Wild2's ``cropped_aligned``); :class:`FrameUnavailable` when it has none."""
        return self._frame_image(self.frames.iloc[index])

    def _frame_image(self, row: pd.Series) -> np.ndarray:
        if bool(row["missing"]):
            raise FrameUnavailable(f"{row['path']}: no face crop for frame {int(row['frame'])} of {row['video']} "
                                   "(the frame is missing from the dataset's crops)")
        if row["source"] == "video":
            path = Path(row["path"])
            if self._video is None or self._video.path != path:
                if self._video is not None:
                    self._video.close()
                self._video = _SequentialVideo(path)
            return self._video.frame(int(row["frame"]))
        return read_image(row["path"])

    def _detect(self, image: np.ndarray, row: pd.Series) -> np.ndarray:
        video, frame = str(row["video"]), int(row["frame"])
        if self._last is None or self._last[0] != video or frame <= self._last[1]:
            self._followers.pop(video, None)  # a new pass over the video: a fresh tracker
        self._last = (video, frame)
        if self._detector is None:
            self._detector = FaceDetector("auto")
        faces = self._detector.detect(image)
        follower = self._followers.setdefault(video, FaceFollower(self.sides.get(video)))
        pick = follower.choose([f.box for f in faces], [f.score for f in faces], image.shape[1])
        if pick is None:
            side = f" on the {self.sides[video]}" if video in self.sides else ""
            raise FrameUnavailable(f"{row['path']}: no face{side} detected in frame {frame} of {video}")
        self.last_box = faces[pick].box  # the detector box of the face scored in this frame
        method = "detector" if self.crop == "detector" else "mesh"
        if method == "mesh" and self._mesh is None:
            self._mesh = FaceMeshBoxes()
        cropped = crop_faces(image, [faces[pick].box], method, self._mesh)
        self.mesh_fallbacks += cropped.fallbacks
        return cropped.crops[0]

    def locate(self, index: int) -> np.ndarray:
        """The face crop (RGB uint8) of frame ``index`` as the model sees it before resizing."""
        row = self.frames.iloc[index]
        image = self._frame_image(row)
        if self.crop == "landmarks":
            _check_landmarks_in_frame(self.landmarks[index], image.shape, row)
            return crop_from_landmarks(image, self.landmarks[index])
        if self.crop in DETECT_MODES:
            return self._detect(image, row)
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.frames.iloc[index]
        image = self.locate(index)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "valence": torch.tensor(float(row["valence"]), dtype=torch.float32),
                "arousal": torch.tensor(float(row["arousal"]), dtype=torch.float32), "index": int(index),
                "path": str(row["path"])}


def _check_landmarks_in_frame(points: np.ndarray, shape: tuple[int, ...], row: pd.Series) -> None:
    """Landmarks whose box lies mostly outside the frame would crop black borders, scored as if a face: the
    frame becomes an error row instead (half the box may hang over an edge, as for a face cut by it)."""
    height, width = shape[:2]
    x1, y1 = points.min(axis=0)
    x2, y2 = points.max(axis=0)
    inside = max(0.0, min(x2, width) - max(x1, 0.0)) * max(0.0, min(y2, height) - max(y1, 0.0))
    if inside < 0.5 * (x2 - x1) * (y2 - y1):
        raise FrameUnavailable(f"{row['path']}: the landmarks of frame {int(row['frame'])} of {row['video']} "
                               f"(x {x1:g}..{x2:g}, y {y1:g}..{y2:g}) lie outside the {width}x{height} frame")


def _resolve_crop(crop: str, default: str) -> str:
    return default if crop in (None, "auto") else crop


def _frame_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["video", "frame", "time_s", "valence", "arousal", "path", "source", "missing"]
    columns += ["shot"] if rows and "shot" in rows[0] else []  # a video CSV's own shot numbers
    return pd.DataFrame(rows, columns=columns).astype({"frame": np.int64, "missing": bool})


# -- AFEW-VA -----------------------------------------------------------------------------------------------

def _afew_value(value: Any, key: str, path: Path, frame: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise VideoLayoutError(f"{path}: frame {frame}: {key} {value!r} is not a number")
    if not -10 <= value <= 10:
        raise VideoLayoutError(f"{path}: frame {frame}: {key} {value} is outside AFEW-VA's [-10, 10]")
    return float(value) / 10.0


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object with a key twice is an error (the default keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _afew_landmarks(value: Any, path: Path, frame: str) -> np.ndarray:
    """68 finite [x, y] pairs within the largest frame the image reader opens, spanning an area."""
    try:  # numbers only: no strings ("12"), no booleans, no ragged lists
        points = np.asarray(value) if isinstance(value, list) else None
    except (TypeError, ValueError):
        points = None
    if points is not None and points.dtype.kind in "iuf":
        points = points.astype(np.float64)
    if points is None or points.dtype != np.float64 or points.shape != (68, 2) or not np.isfinite(points).all():
        raise VideoLayoutError(f"{path}: frame {frame}: landmarks must be 68 [x, y] pairs of finite numbers")
    worst = float(np.abs(points).max())
    if worst > MAX_IMAGE_SIDE:  # a crop around them would allocate terabytes
        raise VideoLayoutError(f"{path}: frame {frame}: landmark coordinate {worst:g} is outside any frame "
                               f"(at most {MAX_IMAGE_SIDE} pixels)")
    if np.ptp(points[:, 0]) <= 0 or np.ptp(points[:, 1]) <= 0:
        raise VideoLayoutError(f"{path}: frame {frame}: the 68 landmarks span no area (all on one line or point)")
    return points


def read_afew_va(root: str | os.PathLike, split: str = "all", crop: str = "auto",
                 fps: float = AFEW_VA_FPS) -> VideoFrameDataset:
    """AFEW-VA under ``root`` (clip folders ``001``..``600``); ``crop`` auto = the given landmarks."""
    root = Path(root)
    if not root.is_dir():
        raise VideoLayoutError(f"{root}: AFEW-VA folder not found")
    wanted = parse_clip_selection(split, AFEW_VA_SPLITS)
    clips = sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not clips:
        raise VideoLayoutError(f"{root}: no AFEW-VA clip folders (001, 002, ...) in this folder")
    if wanted is not None:
        clips = [c for c in clips if int(c.name) in wanted]
        if not clips:
            raise VideoLayoutError(f"{root}: no clip folder of split {split!r}")
    rows: list[dict[str, Any]] = []
    landmarks: list[np.ndarray] = []
    dropped: dict[str, int] = {}
    for clip in clips:
        path = clip / f"{clip.name}.json"
        if not path.is_file():
            raise VideoLayoutError(f"{path}: annotation file missing (AFEW-VA keeps NNN/NNN.json beside the frames)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
        except _RepeatedKey as exc:
            raise VideoLayoutError(f"{path}: key {exc.args[0]!r} appears twice in one object (JSON would keep the "
                                   "last one silently); keep one entry per frame") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VideoLayoutError(f"{path}: not a readable JSON file ({exc})") from None
        frames = data.get("frames") if isinstance(data, dict) else None
        if not isinstance(frames, dict) or not frames:
            raise VideoLayoutError(f"{path}: no 'frames' mapping (expected {{\"frames\": {{\"00000\": {{...}}}}}})")
        present = {p.stem: p for p in clip.iterdir() if p.suffix.lower() == ".png"}
        numbered = _numbered_images(clip)  # copies that renamed the frames (frame_00000.png) keep their number
        keys: dict[int, str] = {}
        for key in sorted(frames, key=lambda k: int(k) if str(k).isdigit() else -1):
            entry = frames[key]
            if not str(key).isdigit() or not isinstance(entry, dict):
                raise VideoLayoutError(f"{path}: frame key {key!r} is not a frame number with an object")
            index = int(key)
            if index in keys:  # "7" and "00007" name the same frame: which annotation is right?
                raise VideoLayoutError(f"{path}: frames {keys[index]!r} and {key!r} are the same frame {index}")
            keys[index] = key
            for field in ("valence", "arousal", "landmarks"):
                if field not in entry:
                    raise VideoLayoutError(f"{path}: frame {key}: no {field!r}")
            points = _afew_landmarks(entry["landmarks"], path, key)
            image = present.get(key) or numbered.get(index)
            if image is None:
                dropped["frame_image_missing"] = dropped.get("frame_image_missing", 0) + 1
                continue
            rows.append({"video": clip.name, "frame": index, "time_s": index / fps,
                         "valence": _afew_value(entry["valence"], "valence", path, key),
                         "arousal": _afew_value(entry["arousal"], "arousal", path, key),
                         "path": str(image), "source": "image", "missing": False})
            landmarks.append(points)
    crop = _resolve_crop(crop, "landmarks")
    if crop == "none":
        raise VideoLayoutError(f"{root}: AFEW-VA frames are whole film frames; use --crop landmarks or detect")
    return VideoFrameDataset(_frame_table(rows), crop, "afew-va", str(root),
                             np.stack(landmarks) if landmarks else np.zeros((0, 68, 2)), dropped=dropped,
                             fps={c.name: fps for c in clips})


# -- Aff-Wild2 ---------------------------------------------------------------------------------------------

def read_affwild2_annotation(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, (n, 2) valence/arousal) of the valid lines of one ABAW VA file (``-5`` lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VideoLayoutError(f"{path}: cannot read ({exc})") from None
    if not lines or lines[0].strip().replace(" ", "").lower() != "valence,arousal":
        raise VideoLayoutError(f"{path}: line 1 must be the header 'valence,arousal' (ABAW VA annotation file)")
    frames, values = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split(",")
        try:
            v, a = (float(p) for p in parts)
        except ValueError:
            raise VideoLayoutError(f"{path}: line {number}: expected 'valence,arousal', got {line.strip()!r}") from None
        if not (np.isfinite(v) and np.isfinite(a)):
            raise VideoLayoutError(f"{path}: line {number}: {line.strip()} is not a pair of finite numbers")
        if v == AFFWILD2_INVALID or a == AFFWILD2_INVALID:
            continue
        if not (-1 <= v <= 1 and -1 <= a <= 1):
            raise VideoLayoutError(f"{path}: line {number}: {line.strip()} is outside [-1, 1] (and not -5)")
        frames.append(number - 2)
        values.append((v, a))
    return np.asarray(frames, dtype=np.int64), np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _side_and_base(video: str) -> tuple[str | None, str]:
    for side in ("left", "right"):
        if video.endswith(f"_{side}"):
            return side, video[: -len(side) - 1]
    return None, video


def _index_videos(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file() and "Annotations" not in path.parts:
            found.setdefault(path.stem, path)
    return found


def read_affwild2(root: str | os.PathLike, split: str = "val", frames: str = "auto", crop: str = "auto",
                  fps: float | None = None) -> VideoFrameDataset:
    """Aff-Wild2's VA track: annotations of ``split`` (train/val) with ``frames`` = ``cropped`` (the
    organisers' ``cropped_aligned`` faces), ``videos`` (raw videos, detector + tracker) or ``auto`` (cropped
    when ``cropped_aligned`` exists)."""
    root = Path(root)
    folder_name = AFFWILD2_SPLITS.get(str(split).lower())
    if folder_name is None:
        raise VideoLayoutError(f"Aff-Wild2 split {split!r}: choose train or val")
    folder = root / "Annotations" / "VA_Estimation_Challenge" / folder_name
    if not folder.is_dir():
        raise VideoLayoutError(f"{folder}: annotation folder not found (expected <data-root>/Annotations/"
                               f"VA_Estimation_Challenge/{folder_name}/<video>.txt)")
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise VideoLayoutError(f"{folder}: no <video>.txt annotation files")
    cropped_root = root / "cropped_aligned"
    if frames == "auto":
        frames = "cropped" if cropped_root.is_dir() else "videos"
    if frames not in ("cropped", "videos"):
        raise ValueError(f"frames must be auto, cropped or videos, got {frames!r}")
    if frames == "cropped" and not cropped_root.is_dir():
        raise VideoLayoutError(f"{cropped_root}: folder of the organisers' face crops not found (or use the raw "
                               "videos: --frames videos)")
    videos = _index_videos(root) if frames == "videos" else {}
    rows: list[dict[str, Any]] = []
    sides: dict[str, str] = {}
    rates: dict[str, float] = {}
    dropped: dict[str, int] = {}
    for path in files:
        video = path.stem
        indices, values = read_affwild2_annotation(path)
        n_lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines()[1:] if line.strip())
        if n_lines > len(indices):
            dropped["invalid_-5"] = dropped.get("invalid_-5", 0) + n_lines - len(indices)
        side, base = _side_and_base(video)
        if frames == "cropped":
            crop_dir = cropped_root / video
            if not crop_dir.is_dir():
                raise VideoLayoutError(f"{crop_dir}: no crops for annotated video {video} ({path})")
            present = {p.name for p in crop_dir.iterdir()}
            rate = fps or (video_fps(videos[base]) if base in videos else DEFAULT_FPS)
            for i, (v, a) in zip(indices, values):
                name = f"{i + 1:05d}.jpg"  # the crops are numbered from 1
                rows.append({"video": video, "frame": int(i), "time_s": i / rate, "valence": v, "arousal": a,
                             "path": str(crop_dir / name), "source": "image", "missing": name not in present})
        else:
            source = videos.get(video) or videos.get(base)
            if source is None:
                raise VideoLayoutError(f"{path}: no video file {base}.<{'|'.join(e[1:] for e in VIDEO_EXTENSIONS)}> "
                                       f"under {root}")
            rate = fps or video_fps(source)
            if side:
                sides[video] = side
            for i, (v, a) in zip(indices, values):
                rows.append({"video": video, "frame": int(i), "time_s": i / rate, "valence": v, "arousal": a,
                             "path": str(source), "source": "video", "missing": False})
        rates[video] = rate
    crop = _resolve_crop(crop, "none" if frames == "cropped" else "detect")
    if crop == "landmarks":
        raise VideoLayoutError(f"{root}: Aff-Wild2 has no per-frame 68 landmarks here; use --crop none (crops) "
                               "or detect")
    return VideoFrameDataset(_frame_table(rows), crop, "affwild2", str(folder), sides=sides, dropped=dropped,
                             fps=rates)


# -- generic per-frame CSV ---------------------------------------------------------------------------------

def _numbered_images(folder: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = re.search(r"(\d+)$", path.stem)
        if match and path.suffix.lower() in IMAGE_EXTENSIONS:
            found.setdefault(int(match.group(1)), path)
    return found


def _csv_row_error(table: pd.DataFrame, path: Path, mask: np.ndarray, column: str, problem: str) -> VideoLayoutError:
    """The error for the rows of ``mask``: the first one's CSV line and value, and how many rows share it."""
    rows = np.flatnonzero(mask)
    value = table[column].iloc[int(rows[0])]
    shown = f"{value:g}" if isinstance(value, (float, np.floating)) else repr(value)
    more = f" ({len(rows)} rows in all)" if len(rows) > 1 else ""
    return VideoLayoutError(f"{path}: row {table.index[int(rows[0])] + 2}: {column} {shown} {problem}{more}")


def _checked_csv_table(table: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of a video CSV with numeric, finite, in-range values and integer frames, sorted by video and
    frame. A frame annotated twice with different values is refused (which one is right?); an identical
    repeated row is kept once and counted in ``dropped["duplicate_rows"]``."""
    for column in [c for c in ("frame", "valence", "arousal", "time", "shot") if c in table]:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
        if column == "time":
            bad &= table[column].notna().to_numpy()  # an empty time cell: the frame's time from the fps
        if bad.any():
            raise _csv_row_error(table, path, bad, column, "is not a finite number")
        table[column] = values
    for column in ("valence", "arousal"):
        outside = (table[column].abs() > 1).to_numpy()
        if outside.any():
            raise _csv_row_error(table, path, outside, column, "is outside [-1, 1] (rescale the labels first)")
    for column in [c for c in ("frame", "shot") if c in table]:
        numbers = table[column].to_numpy(dtype=np.float64)
        not_index = (numbers != np.round(numbers)) | (numbers < 0)
        if not_index.any():
            raise _csv_row_error(table, path, not_index, column, f"is not a {column} number (a whole number >= 0)")
    if "shot" in table:
        table["shot"] = table["shot"].astype(np.int64)
    table = table.assign(video=table["video"].astype(str), frame=table["frame"].astype(np.int64))
    table = table.sort_values(["video", "frame"], kind="stable")
    repeated = table.duplicated(["video", "frame"], keep=False).to_numpy()
    dropped: dict[str, int] = {}
    if repeated.any():
        labels = [c for c in ("valence", "arousal", "time", "path") if c in table]
        groups = table[repeated].groupby(["video", "frame"], sort=False)[labels].nunique(dropna=False)
        conflicting = groups[(groups > 1).any(axis=1)]
        if len(conflicting):
            video, frame = conflicting.index[0]
            lines = ", ".join(str(i + 2) for i in table.index[repeated & (table["video"] == video).to_numpy()
                                                              & (table["frame"] == frame).to_numpy()])
            raise VideoLayoutError(f"{path}: frame {frame} of video {video} is annotated more than once with "
                                   f"different values (rows {lines}; {len(conflicting)} frame(s) in all); keep one "
                                   "row per frame")
        dropped["duplicate_rows"] = int(table.duplicated(["video", "frame"]).sum())
        table = table.drop_duplicates(["video", "frame"])
    return table, dropped


def read_video_csv(csv_path: str | os.PathLike, split: str | None = None, crop: str = "auto",
                   frames_root: str | os.PathLike | None = None, fps: float | None = None,
                   one_based: bool = False) -> VideoFrameDataset:
    """A per-frame CSV (``video, frame, valence, arousal`` + optional ``time``, ``split``, ``path``, ``shot``).

    ``csv_path`` may be the CSV or a folder with exactly one CSV. Frames: the ``path`` column (relative to the
    CSV's folder), else ``<frames_root>/<video>/`` (image whose number is the frame, ``one_based`` when the
    files start at 1) or a video file ``<frames_root>/<video>.<ext>`` (``frames_root`` defaults to the CSV's
    folder). ``crop`` auto: none for images (they are faces), detect for videos.
    """
    path = Path(csv_path)
    if path.is_dir():
        found = sorted(path.glob("*.csv"))
        if len(found) != 1:
            raise VideoLayoutError(f"{path}: expected exactly one CSV in this folder, found {len(found)}; pass the file")
        path = found[0]
    if not path.is_file():
        raise VideoLayoutError(f"{path}: CSV not found")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise VideoLayoutError(f"{path}: not a readable CSV ({exc})") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("video", "frame", "valence", "arousal") if c not in table]
    if missing:
        raise VideoLayoutError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(table.columns)})")
    if split is not None:
        if "split" not in table:
            raise VideoLayoutError(f"{path}: --split {split} given but the CSV has no 'split' column")
        table = table[table["split"].astype(str) == str(split)]
        if table.empty:
            raise VideoLayoutError(f"{path}: no row of split {split!r}")
    table, dropped = _checked_csv_table(table, path)
    base = Path(frames_root) if frames_root is not None else path.parent
    rows: list[dict[str, Any]] = []
    rates: dict[str, float] = {}
    for video, group in table.groupby("video", sort=False):
        folder = base / video
        videos = [base / f"{video}{ext}" for ext in VIDEO_EXTENSIONS if (base / f"{video}{ext}").is_file()]
        numbered = _numbered_images(folder) if "path" not in group and folder.is_dir() else {}
        if "path" not in group and not numbered and not videos:
            raise VideoLayoutError(f"{path}: video {video}: no frames folder {folder} with numbered images and no "
                                   f"video file {base / video}.<ext>")
        rate = fps or (video_fps(videos[0]) if videos and not numbered else DEFAULT_FPS)
        rates[video] = rate
        for row in group.itertuples(index=False):
            frame = int(row.frame)
            time_s = float(row.time) if "time" in group and pd.notna(row.time) else frame / rate
            if "path" in group:
                image = Path(str(row.path))
                image = image if image.is_absolute() else path.parent / image
                entry = {"path": str(image), "source": "image", "missing": False}
            elif numbered:
                image = numbered.get(frame + 1 if one_based else frame)
                entry = {"path": str(image or folder / f"{frame}"), "source": "image", "missing": image is None}
            else:
                entry = {"path": str(videos[0]), "source": "video", "missing": False}
            rows.append({"video": video, "frame": frame, "time_s": time_s, "valence": float(row.valence),
                         "arousal": float(row.arousal), **entry})
            if "shot" in group:
                rows[-1]["shot"] = int(row.shot)
    frame_table = _frame_table(rows)
    crop = _resolve_crop(crop, "detect" if (frame_table["source"] == "video").any() else "none")
    if crop == "landmarks":
        raise VideoLayoutError(f"{path}: the video CSV has no landmarks; use --crop none or detect")
    return VideoFrameDataset(frame_table, crop, "video-csv", str(path), fps=rates, dropped=dropped)


def build_video_dataset(dataset: str, root: str | os.PathLike, split: str | None, crop: str = "auto",
                        frames: str = "auto", fps: float | None = None,
                        frames_root: str | os.PathLike | None = None) -> VideoFrameDataset:
    """A video dataset by format name (``afew-va``, ``affwild2``, ``video-csv``), as ``evaluate`` builds it.

    Default splits: AFEW-VA ``all``, Aff-Wild2 ``val``, video-csv every row.
    """
    if dataset == "afew-va":
        return read_afew_va(root, split or "all", crop, fps or AFEW_VA_FPS)
    if dataset == "affwild2":
        return read_affwild2(root, split or "val", frames, crop, fps)
    if dataset == "video-csv":
        return read_video_csv(root, split, crop, frames_root, fps)
    raise ValueError(f"unknown video dataset {dataset!r}; choose from {VIDEO_DATASETS}")


# Registration of the video formats (emonet.data.registry): fine-tuning splits and fixture writers.
register_dataset("afew-va", splits=("train", "val", "test"), fixture=write_afew_va_fixture)(
    partial(build_video_dataset, "afew-va"))
register_dataset("affwild2", splits=("train", "val", None), fixture=write_affwild2_fixture)(
    partial(build_video_dataset, "affwild2"))
register_dataset("video-csv")(partial(build_video_dataset, "video-csv"))

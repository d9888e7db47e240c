"""What the video engine produces: per-face and per-frame results (:mod:`emonet.records`), the summary of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from emonet.records import FaceRecord, FrameResult

__all__ = ["FaceResult", "FrameResult", "LocatedFace", "LocatedFrame", "VideoSummary"]

FaceResult = FaceRecord  # the one face record (emonet.records), with its video fields set


@dataclass
class VideoSummary:
    """What a run did. ``fps`` counts processing time only (model loading excluded)."""

    source: str
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0  # CSV rows (face x frame)
    unreadable_frames: int = 0  # frames of an image folder that could not be read: an error row each
    tracks: int = 0  # distinct face IDs
    detections_run: int = 0
    crop_fallbacks: int = 0  # faces cropped from the detector box because FaceMesh found none (--crop mesh/refine)
    seconds: float = 0.0
    fps: float = 0.0
    interrupted: bool = False
    disconnected: bool = False
    csv: str | None = None
    video: str | None = None
    plot: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        parts = [f"{self.frames} frame(s) from {self.source}", f"{self.faces} face row(s)",
                 f"{self.tracks} face ID(s)", f"{self.frames_with_faces} frame(s) with a face",
                 f"{self.fps:.2f} frames/s"]
        if self.unreadable_frames:
            parts.append(f"{self.unreadable_frames} unreadable frame(s) listed with their error")
        if self.crop_fallbacks:
            parts.append(f"{self.crop_fallbacks} face(s) cropped from the detector box (FaceMesh found no face)")
        text = ", ".join(parts)
        for label, value in (("CSV", self.csv), ("video", self.video), ("plot", self.plot)):
            if value:
                text += f"\n  {label}: {value}"
        if self.interrupted:
            text += "\n  interrupted: the outputs hold the frames processed so far"
        if self.disconnected:
            text += "\n  the source stopped delivering frames (disconnected); outputs were flushed"
        return text


@dataclass
class LocatedFace:
    """A face to predict in a located frame: its track ID, box (image pixels, not clipped) and detector score."""

    track_id: int
    box: np.ndarray  # (4,) float64 x1, y1, x2, y2
    score: float


@dataclass
class LocatedFrame:
    """What the locate stage (:meth:`emonet.video.engine.VideoEngine.locate`) hands to the model stage.

    Holds no image: only the faces, and per model index the crop regions and the model-input crops (RGB
    uint8, ``input_size`` square), so it is small and picklable (it can travel between processes).
    ``removed``: track IDs dropped while locating this frame; ``new_scene``: the frame started a new scene
    (a shot cut, or an unrelated image); ``shot``: its shot number (0-based). The finish stage applies
    ``removed`` and ``new_scene`` to the smoothing histories, in frame order.
    """

    index: int
    time_s: float
    size: tuple[int, int]  # (width, height) of the frame
    detected: bool  # the detector ran on this frame
    faces: list[LocatedFace]
    regions: dict[int, list] = field(default_factory=dict)  # model index -> CropRegion per face
    crops: dict[int, list[np.ndarray]] = field(default_factory=dict)  # model index -> crop per face
    methods: dict[int, list[str]] = field(default_factory=dict)  # model index -> crop method per face
    image: np.ndarray | None = field(default=None, repr=False)  # RGB frame, kept only for --crop refine's 2nd crop
    removed: list[int] = field(default_factory=list)
    new_scene: bool = False
    shot: int = 0

    @property
    def models(self) -> list[int]:
        """Model indices this frame was cropped for (the ones the finish stage returns results for)."""
        return list(self.crops)

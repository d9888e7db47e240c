"""Shot boundaries (hard cuts and fades through black), found online, one frame at a time.

A video cut joins two unrelated shots: a face track or a smoothing history must not carry over it. The
:class:`ShotDetector` is fed every frame in order (files, image folders and live sources alike) and says
whether the frame starts a new shot, with no look-ahead and no delay:

- hard cuts: PySceneDetect's ``ContentDetector`` frame score (mean change of hue, saturation and luma
  between consecutive frames, 0-255). A frame is a cut when its score reaches ``threshold`` (the library's
  default, 27), or when it is at least :data:`MIN_CONTENT` and :data:`ADAPTIVE_RATIO` times the mean score
  of the previous :data:`ADAPTIVE_WINDOW` frames (the rule and defaults of PySceneDetect's
  ``AdaptiveDetector``, which looks at frames on both sides and so reports cuts late; here only past frames
  count, so a cut is known on its own frame). The adaptive rule finds cuts between similar-looking shots
  (same set, another person) while a pan or a moving person, whose scores stay high, makes none;
- fades through black: PySceneDetect's ``ThresholdDetector`` with ``fade_bias=1``, which reports the cut
  on the first frame that comes back above the black level (the fade-in), also without delay. Hard cuts
  are not reported on black frames (the fade-in is).

After a cut, another one is reported only ``min_shot_frames`` frames later (a flash is not two cuts).
Both detectors look at a small copy of the frame (:data:`ANALYSIS_WIDTH` pixels wide): the scores are
image means, which the small copy keeps, at a small fraction of the cost (measured in
docs/video-demo.md). Cross-dissolves (one shot blended into the next over many frames) are not detected.
"""

from __future__ import annotations

import functools
from collections import deque

import cv2
import numpy as np

from emonet.errors import UserError

# PySceneDetect's ContentDetector default: the frame score (mean HSV change, 0-255) that is always a cut.
DEFAULT_CUT_THRESHOLD = 27.0
# PySceneDetect's AdaptiveDetector defaults: a score this many times the recent mean, and at least
# MIN_CONTENT, is a cut; the recent mean is over ADAPTIVE_WINDOW past frames (its window_width 2, both sides).
ADAPTIVE_RATIO = 3.0
MIN_CONTENT = 15.0
ADAPTIVE_WINDOW = 4
# Mean pixel level (0-255) under which a frame counts as black (the middle of a fade through black).
FADE_BLACK_LEVEL = 12.0
# Frames a shot lasts at least before another cut is reported (a flash or a glitch is not two cuts).
DEFAULT_MIN_SHOT_FRAMES = 4
# Width of the analysed copy: cut statistics are image means, which a small copy keeps.
ANALYSIS_WIDTH = 128
# Frame rate of PySceneDetect's timecodes: the filters used here count frames, so the value is immaterial.
_TIMECODE_FPS = 30.0
SCENEDETECT_INSTALL = "pip install --no-deps scenedetect==0.7.2 click"


@functools.cache
def _scenedetect() -> tuple[type, type, type]:
    """PySceneDetect's ``FrameTimecode``, the past-only adaptive content detector and ``ThresholdDetector``.

    Imported on first use, not with the module: scenedetect 0.7 requires ``opencv-python``, which would clash
    with ``opencv-contrib-python`` in the same ``cv2`` folder, so it is installed with ``--no-deps`` (see
    requirements.txt); where it is missing, ``import emonet.video`` still works and a run with shots on says
    how to install it.
    """
    try:
        from scenedetect.common import FrameTimecode
        from scenedetect.detectors import ContentDetector, ThresholdDetector
    except ImportError as exc:
        raise UserError(f"shot-cut detection needs PySceneDetect ({exc}): {SCENEDETECT_INSTALL} "
                        "(--no-deps: its opencv-python would clash with opencv-contrib-python), or pass "
                        "--no-shots") from None

    class PastAdaptiveDetector(ContentDetector):
        """ContentDetector whose cuts are decided on the current frame: its absolute threshold, or the
        adaptive rule on the past :data:`ADAPTIVE_WINDOW` scores (see the module docstring). Reports every
        qualifying frame: :class:`ShotDetector` enforces the minimum shot length."""

        def __init__(self, threshold: float) -> None:
            super().__init__(threshold=threshold, min_scene_len=0)  # 0: no flash filter, decided here
            self._recent: deque[float] = deque(maxlen=ADAPTIVE_WINDOW)
            self._first = True

        def process_frame(self, timecode, frame_img: np.ndarray) -> list:
            over_threshold = bool(super().process_frame(timecode, frame_img))
            score = self._frame_score or 0.0  # as AdaptiveDetector does: the score the parent just computed
            if self._first:  # no previous frame: no score
                self._first = False
                return []
            recent = sum(self._recent) / len(self._recent) if self._recent else 0.0
            self._recent.append(score)
            adaptive = score >= MIN_CONTENT and score >= ADAPTIVE_RATIO * recent
            return [timecode] if over_threshold or adaptive else []

    return FrameTimecode, PastAdaptiveDetector, ThresholdDetector


class ShotDetector:
    """Online shot-boundary detector: :meth:`update` says whether each frame starts a new shot.

    Args:
        threshold: hard-cut threshold (ContentDetector's ``content_val``); lower finds more cuts.
        min_shot_frames: a cut closer than this many frames after the previous one is ignored.
        fades: also detect fades through black (a new shot starts when the picture comes back).

    The first frame starts shot 0 (``update`` returns False for it: nothing is cut). A frame whose size
    differs from the previous one's starts a new shot. :meth:`start_shot` marks a shot start known from
    elsewhere (a new photo of a folder); :meth:`reset` starts over for another video.
    """

    def __init__(
        self, threshold: float = DEFAULT_CUT_THRESHOLD, min_shot_frames: int = DEFAULT_MIN_SHOT_FRAMES,
        fades: bool = True,
    ) -> None:
        if not np.isfinite(threshold) or threshold <= 0:
            raise ValueError(f"threshold must be a positive number, got {threshold}")
        if min_shot_frames < 1:
            raise ValueError(f"min_shot_frames must be >= 1, got {min_shot_frames}")
        self.threshold, self.min_shot_frames, self.fades = float(threshold), int(min_shot_frames), fades
        self.reset()

    @property
    def shot(self) -> int:
        """The shot number (0-based) of the last frame passed to :meth:`update`."""
        return self._shot

    @property
    def cuts(self) -> list[int]:
        """Frame numbers (0-based, counted by :meth:`update` since :meth:`reset`) that started a new shot."""
        return list(self._cuts)

    def reset(self) -> None:
        """Forget everything: the next frame is the first frame of shot 0 of a new video."""
        self._shot, self._frames, self._cuts = 0, 0, []
        self._pending_start = False
        self._restart_detectors()

    def start_shot(self) -> None:
        """The next frame starts a new shot whatever its content (e.g. an unrelated photo of a folder)."""
        self._pending_start = self._frames > 0

    def update(self, frame_rgb: np.ndarray) -> bool:
        """Feed the next frame (RGB or BGR uint8, any size); True when it starts a new shot."""
        small = self._analysis_copy(frame_rgb)
        starts = self._pending_start or (self._size is not None and frame_rgb.shape[:2] != self._size)
        if starts:
            self._restart_detectors()
        self._size = frame_rgb.shape[:2]
        timecode = _scenedetect()[0](self._frames, fps=_TIMECODE_FPS)
        # Both detectors see every frame, so that their histories stay in step with the video.
        hard_cut = bool(self._content.process_frame(timecode, small)) and float(small.mean()) >= FADE_BLACK_LEVEL
        fade_in = self._fade is not None and bool(self._fade.process_frame(timecode, small))
        too_soon = bool(self._cuts) and self._frames - self._cuts[-1] < self.min_shot_frames  # a flash
        cut = (hard_cut or fade_in) and not too_soon
        starts = starts or cut and self._frames > 0
        if starts:
            self._shot += 1
            self._cuts.append(self._frames)
        self._frames += 1
        self._pending_start = False
        return starts

    def _restart_detectors(self) -> None:
        self._size: tuple[int, ...] | None = None
        _, content_detector, threshold_detector = _scenedetect()
        self._content = content_detector(self.threshold)
        self._fade = threshold_detector(threshold=FADE_BLACK_LEVEL, fade_bias=1.0, min_scene_len=1) if self.fades else None

    @staticmethod
    def _analysis_copy(frame: np.ndarray) -> np.ndarray:
        """A small 3-channel uint8 copy (the detectors' statistics are image means: the size barely matters)."""
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        h, w = frame.shape[:2]
        if w <= ANALYSIS_WIDTH:
            return np.ascontiguousarray(frame[..., :3])
        height = max(1, round(h * ANALYSIS_WIDTH / w))
        return cv2.resize(np.ascontiguousarray(frame[..., :3]), (ANALYSIS_WIDTH, height), interpolation=cv2.INTER_AREA)

"""Video: the engine shared by ``python -m emonet video`` and the demo, its sources, outputs and overlay.

Modules, each importing only the ones above it in this list:

* :mod:`~emonet.video.results`: :class:`FaceResult` and :class:`FrameResult` (:mod:`emonet.records`),
  :class:`VideoSummary`;
* :mod:`~emonet.video.sources`: cameras, files, image folders, streams, the generated ``sample`` clip;
* :mod:`~emonet.video.overlay`: compatibility re-export of :mod:`emonet.drawing` (the one drawing);
* :mod:`~emonet.video.writers`: per-frame CSV, annotated video, valence/arousal plot;
* :mod:`~emonet.video.shots`: :class:`ShotDetector`, shot cuts found online (hard cuts, fades through black);
* :mod:`~emonet.video.engine`: :class:`VideoEngine` (detect, track, predict, smooth) and :func:`process_video`.

The public names are re-exported here: ``from emonet.video import VideoEngine, open_source, process_video``.
"""

from emonet.drawing import OverlayRenderer, draw_circumplex, draw_face, draw_hud, track_color
from emonet.samples import VIDEO_CODECS
from emonet.video.engine import VideoEngine, process_video
from emonet.video.results import FaceResult, FrameResult, VideoSummary
from emonet.video.shots import ShotDetector
from emonet.video.sources import (
    DEFAULT_CAMERA_INDICES,
    CaptureSource,
    Frame,
    FrameSource,
    ImageFolderSource,
    SourceError,
    open_camera,
    open_source,
)
from emonet.video.writers import (
    FrameCsvWriter,
    FrameVideoWriter,
    VideoWriteError,
    csv_columns,
    open_video_writer,
    plot_tracks,
)

__all__ = [
    "DEFAULT_CAMERA_INDICES", "VIDEO_CODECS", "CaptureSource", "FaceResult", "Frame", "FrameCsvWriter",
    "FrameResult", "FrameSource", "FrameVideoWriter", "ImageFolderSource", "OverlayRenderer", "ShotDetector",
    "SourceError",
    "VideoEngine", "VideoSummary", "VideoWriteError", "csv_columns", "draw_circumplex", "draw_face", "draw_hud",
    "open_camera", "open_source", "open_video_writer", "plot_tracks", "process_video", "track_color",
]

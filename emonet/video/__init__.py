"""Video: the engine shared by ``python -m emonet video`` and the demo, its sources, outputs and overlay.

The public names are re-exported here: ``from emonet.video import VideoEngine, open_source, process_video``.
"""

from emonet.samples import VIDEO_CODECS
from emonet.video.engine import (
    DEFAULT_CAMERA_INDICES,
    CaptureSource,
    FaceResult,
    Frame,
    FrameCsvWriter,
    FrameResult,
    FrameSource,
    FrameVideoWriter,
    ImageFolderSource,
    SourceError,
    VideoEngine,
    VideoSummary,
    VideoWriteError,
    csv_columns,
    open_camera,
    open_source,
    open_video_writer,
    plot_tracks,
    process_video,
)
from emonet.video.overlay import OverlayRenderer, draw_circumplex, draw_face, draw_hud, track_color

__all__ = [
    "DEFAULT_CAMERA_INDICES", "VIDEO_CODECS", "CaptureSource", "FaceResult", "Frame", "FrameCsvWriter",
    "FrameResult", "FrameSource", "FrameVideoWriter", "ImageFolderSource", "OverlayRenderer", "SourceError",
    "VideoEngine", "VideoSummary", "VideoWriteError", "csv_columns", "draw_circumplex", "draw_face", "draw_hud",
    "open_camera", "open_source", "open_video_writer", "plot_tracks", "process_video", "track_color",
]

"""The browser app (``python -m emonet app``): images, videos and a live webcam in a Gradio page.

* :mod:`emonet.app.core`: the analyses (image, video, live frames) on the library's Predictor,
  VideoEngine and overlay; no Gradio.
* :mod:`emonet.app.server`: safe serving (local address, no share link, limits, temporary folder).
* :mod:`emonet.app.ui`: the Gradio page (import it after :func:`emonet.app.server.prepare_environment`).
"""

from emonet.app.core import AppCore, Limits, Options, find_checkpoints
from emonet.app.server import ServerConfig, cleanup, make_workdir, prepare_environment, serve

__all__ = ["AppCore", "Limits", "Options", "ServerConfig", "cleanup", "find_checkpoints", "make_workdir",
           "prepare_environment", "serve"]

"""The browser app (``python -m emonet app``): images, videos and a live webcam in a Gradio page.

* :mod:`emonet.app.core`: the analyses (image, video, live frames) on the library's Predictor,
  VideoEngine and overlay; no Gradio (``AppCore``, ``Options``, ``Limits``, ``find_checkpoints``).
* :mod:`emonet.app.server`: safe serving (local address, no share link, limits, temporary folder).
* :mod:`emonet.app.ui`: the Gradio page (import it after :func:`emonet.app.server.prepare_environment`).

Nothing is imported here: ``emonet.app.server``'s checks run before PyTorch, MediaPipe or Gradio load.
"""

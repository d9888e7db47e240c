"""Inference core: run a model on preprocessed batches with the backend and precision asked for.

Modules, each importing only the ones above it in this list:

* :mod:`~emonet.inference.backends`: backend and precision names (validated there only), documented
  tolerances and the accuracy checks against the fp32 reference; pure Python and numpy;
* :mod:`~emonet.inference.onnx`: ONNX export, int8 quantisation, the export cache, ONNX Runtime sessions;
* :mod:`~emonet.inference.runners`: the :class:`Runner` interface and one runner per backend;
* :mod:`~emonet.inference.selection`: :func:`make_runner` (``auto``, fallback order, one device resolution).

``from emonet.inference import make_runner`` works; names load on first use, so that reading
``emonet.inference.backends`` (the command line's choices) does not import PyTorch.
"""

from __future__ import annotations

from emonet.lazy import lazy_exports

_EXPORTS = {
    "BACKENDS": "emonet.inference.backends",
    "BACKEND_PRECISIONS": "emonet.inference.backends",
    "PRECISIONS": "emonet.inference.backends",
    "TOLERANCES": "emonet.inference.backends",
    "BackendUnavailable": "emonet.inference.backends",
    "agreement": "emonet.inference.backends",
    "tolerance_verdict": "emonet.inference.backends",
    "Runner": "emonet.inference.runners",
    "candidates": "emonet.inference.selection",
    "make_runner": "emonet.inference.selection",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

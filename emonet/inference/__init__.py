"""Inference core: run a model on preprocessed batches with the backend and precision asked for.

Modules, each importing only the ones above it in this list:

* :mod:`~emonet.inference.backends`: the backend registry (names and precisions declared there, runner classes
  registered with ``@register_runner``; validated there only), documented tolerances and the accuracy checks
  against the fp32 reference; pure Python and numpy;
* :mod:`~emonet.inference.onnx`: ONNX export, int8 quantisation, the export cache, ONNX Runtime sessions;
* :mod:`~emonet.inference.verify`: the verification rule applied to a runner on real face crops, verdicts cached;
* :mod:`~emonet.inference.int8`: int8 with a per-block sensitivity analysis (sensitive blocks stay fp32);
* :mod:`~emonet.inference.runners`: the :class:`Runner` interface and one runner per backend;
* :mod:`~emonet.inference.choice`: the default path, the fastest exact backend probed once and cached;
* :mod:`~emonet.inference.selection`: :func:`make_runner` (``auto``, fallback order, verification, one
  device resolution).

``from emonet.inference import make_runner`` works; names load on first use, so that reading
``emonet.inference.backends`` (the command line's choices) does not import PyTorch.
"""

from __future__ import annotations

from emonet.lazy import lazy_exports

_EXPORTS = {
    "PRECISIONS": "emonet.inference.backends",
    "BackendSpec": "emonet.inference.backends",
    "backend_names": "emonet.inference.backends",
    "backend_precisions": "emonet.inference.backends",
    "declare_backend": "emonet.inference.backends",
    "register_runner": "emonet.inference.backends",
    "unregister_backend": "emonet.inference.backends",
    "TOLERANCES": "emonet.inference.backends",
    "BackendUnavailable": "emonet.inference.backends",
    "agreement": "emonet.inference.backends",
    "tolerance_verdict": "emonet.inference.backends",
    "verify_rule": "emonet.inference.backends",
    "stable_faces": "emonet.inference.backends",
    "BackendChoice": "emonet.inference.choice",
    "build_int8": "emonet.inference.int8",
    "DEFAULT_BACKEND": "emonet.inference.selection",
    "verify_runner": "emonet.inference.selection",
    "Runner": "emonet.inference.runners",
    "candidates": "emonet.inference.selection",
    "make_runner": "emonet.inference.selection",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

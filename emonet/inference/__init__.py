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

# Public names -> defining module (grouped by module, as in emonet/__init__.py).
_EXPORTS = {
    **dict.fromkeys(["PRECISIONS", "BackendSpec", "backend_names", "backend_precisions", "declare_backend",
                     "register_runner", "unregister_backend", "TOLERANCES", "BackendUnavailable", "agreement",
                     "tolerance_verdict", "verify_rule", "stable_faces"], "emonet.inference.backends"),
    "BackendChoice": "emonet.inference.choice",
    "build_int8": "emonet.inference.int8",
    **dict.fromkeys(["DEFAULT_BACKEND", "verify_runner", "candidates", "make_runner"], "emonet.inference.selection"),
    "Runner": "emonet.inference.runners",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

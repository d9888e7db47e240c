"""Evaluation: metrics, scoring a model on a labelled dataset, reviewing its predictions, video evaluation.

Modules (each may import only those before it):

* :mod:`~emonet.evaluation.metrics`: the metrics (CCC, PCC, RMSE, SAGR, accuracy, mAP, ...), NumPy only;
* :mod:`~emonet.evaluation.dataset`: the one evaluation path (run a model over a labelled dataset, score it,
  report it), used by ``evaluate``, training validation and fine-tuning;
* :mod:`~emonet.evaluation.review`: a predictions CSV, metrics and figures on a test set (``review``);
* :mod:`~emonet.evaluation.video`: per-frame V/A on video datasets, with and without temporal smoothing.

Public names load on first use, so ``emonet.evaluation.metrics`` stays importable without PyTorch.
"""

from emonet.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["EvaluationResult", "ModelInput", "Predictions", "ResizeCrop", "compute_metrics", "evaluate",
         "format_table", "json_ready", "load_weights", "paper_metrics", "predict_dataset", "published_reference",
         "require_scored", "score_arrays", "score_predictions", "write_results"],
        "emonet.evaluation.dataset"),
    **dict.fromkeys(["compute_review_table", "review_predictions_with_visualization", "write_review_files"],
                    "emonet.evaluation.review"),
    **dict.fromkeys(["VideoEvaluationResult", "evaluate_video", "format_video_table"], "emonet.evaluation.video"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

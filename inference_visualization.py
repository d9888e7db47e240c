#!/usr/bin/env python
"""Review a checkpoint on a labelled test set: ``python inference_visualization.py ARGS`` is
``python -m emonet review ARGS`` (predictions CSV, metrics JSON/CSV, grid, detailed panels, co-occurrence
heatmap / confusion matrix and V/A scatter).

Example::

    python inference_visualization.py --weights best_model.pth --annotations normalized_dataset_test.csv \\
        --arrays img_arrs --output-dir prediction_review --num-samples 20 --detailed-samples 20 --sort-by worst

From Python (same function)::

    from inference_visualization import review_predictions_with_visualization
"""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))

from emonet.cli import script_main  # noqa: E402
from emonet.evaluation.review import review_predictions_with_visualization  # noqa: E402

__all__ = ["main", "review_predictions_with_visualization"]

main = script_main("review", prog="inference_visualization.py")

if __name__ == "__main__":
    sys.exit(main())

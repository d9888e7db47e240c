"""Training engine shared by the notebook, ``python -m emonet train`` and EmoNet fine-tuning.

Typical use::

    from emonet.training import TrainConfig, Trainer, build_transforms
    config = TrainConfig(arch="resnet18_dual_head", epochs=10, va_loss="mse", output_dir="runs/r18")
    train_tf, eval_tf = build_transforms(model, config)
    trainer = Trainer(model, train_set, val_set, config, task="multilabel")
    result = trainer.fit()          # best.pth / last.pth / training_state.pt / log.csv / curves.png

Fine-tuning hooks: ``Trainer(..., frozen_modules=[...], param_groups=..., callbacks=[...])``,
``config.unfreeze_epoch`` / ``config.unfreeze_lr``, :meth:`Trainer.unfreeze`.
"""

from emonet.training.config import TrainConfig
from emonet.training.engine import (
    Callback,
    FitResult,
    LRSchedule,
    Trainer,
    compute_metrics,
    dataset_targets,
    evaluate,
    predict_dataset,
    summarize_epochs,
)
from emonet.training.losses import MultiTaskLoss, ccc, ccc_loss, compute_pos_weight, regression_loss
from emonet.training.transforms import ImageTransform, build_transforms

__all__ = [
    "Callback", "FitResult", "ImageTransform", "LRSchedule", "MultiTaskLoss", "TrainConfig", "Trainer",
    "build_transforms", "ccc", "ccc_loss", "compute_metrics", "compute_pos_weight", "dataset_targets",
    "evaluate", "predict_dataset", "regression_loss", "summarize_epochs",
]

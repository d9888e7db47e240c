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

from emonet.lazy import lazy_exports

# Public names -> defining module, imported on first use: ``emonet.training.config`` (plain Python) must load
# without PyTorch, so that ``python -m emonet train --help`` stays fast.
_EXPORTS = {
    "TrainConfig": "emonet.training.config",
    **dict.fromkeys(["Callback", "FitResult", "LRSchedule", "Trainer", "dataset_targets"], "emonet.training.engine"),
    "summarize_epochs": "emonet.training.history",
    "validation_metrics": "emonet.training.validation",
    **dict.fromkeys(["MultiTaskLoss", "ccc", "ccc_loss", "compute_pos_weight", "regression_loss"],
                    "emonet.training.losses"),
    **dict.fromkeys(["ImageTransform", "build_transforms"], "emonet.training.transforms"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

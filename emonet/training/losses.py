"""Losses: multi-label BCE / single-label cross-entropy + a selectable valence/arousal loss.

The valence/arousal loss is chosen by name (``mse``, ``l1``, ``huber``, ``ccc``, ``ccc+mse``) and the choice really takes
effect (the original project computed CCC whatever was selected). Missing V/A targets (NaN) and missing
single-label targets (-1) are left out of their terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emonet.training.config import VA_LOSSES


def ccc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable concordance correlation coefficient over a batch (population statistics)."""
    pred, target = pred.float().flatten(), target.float().flatten()
    pred_mean, target_mean = pred.mean(), target.mean()
    pred_var = ((pred - pred_mean) ** 2).mean()
    target_var = ((target - target_mean) ** 2).mean()
    covariance = ((pred - pred_mean) * (target - target_mean)).mean()
    return 2 * covariance / (pred_var + target_var + (pred_mean - target_mean) ** 2 + eps)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - CCC``: 0 for perfect agreement, up to 2 for perfectly inverted predictions."""
    return 1.0 - ccc(pred, target)


def distillation_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(teacher_T || student_T) * T^2`` averaged over the batch (Hinton et al.'s distillation term).

    ``teacher_probs`` are the teacher's softmax probabilities at T = 1 (what prediction tables store); they are
    softened as ``softmax(log p / T)``, which equals ``softmax(logits / T)`` of the teacher's logits. The T^2
    keeps the gradient scale independent of T.
    """
    t = float(temperature)
    teacher_log = F.log_softmax(torch.log(teacher_probs.float().clamp_min(1e-12)) / t, dim=1)
    student_log = F.log_softmax(student_logits.float() / t, dim=1)
    return F.kl_div(student_log, teacher_log.to(student_log.device), log_target=True, reduction="batchmean") * t * t


def regression_loss(name: str, pred: torch.Tensor, target: torch.Tensor, huber_delta: float = 0.1) -> torch.Tensor:
    """One valence or arousal loss by name over the finite targets (0 with a live graph when there are none)."""
    pred, target = pred.float().flatten(), target.float().flatten().to(pred.device)
    valid = torch.isfinite(target)
    if not bool(valid.all()):
        pred, target = pred[valid], target[valid]
    if target.numel() == 0:
        return pred.sum() * 0.0
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "l1":
        return F.l1_loss(pred, target)
    if name == "huber":
        return F.huber_loss(pred, target, delta=huber_delta)
    if name == "ccc":
        return ccc_loss(pred, target)
    if name == "ccc+mse":  # CCC fits the spread and the agreement; MSE anchors each value (EmoNet's loss family)
        return ccc_loss(pred, target) + F.mse_loss(pred, target)
    raise ValueError(f"unknown valence/arousal loss {name!r}; choose one of {VA_LOSSES}")


def compute_pos_weight(labels: torch.Tensor, max_weight: float = 50.0) -> torch.Tensor:
    """Per-category ``#negatives / #positives`` from (N, C) 0/1 training labels, clamped to [1, max_weight].

    Categories with no positive get ``max_weight``; the clamp keeps rare EMOTIC categories from dominating.
    """
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N, C), got shape {tuple(labels.shape)}")
    positives = labels.sum(0)
    negatives = labels.shape[0] - positives
    weight = negatives / positives.clamp(min=1.0)
    weight = torch.where(positives > 0, weight, torch.full_like(weight, max_weight))
    return weight.clamp(1.0, max_weight)


class MultiTaskLoss(nn.Module):
    """Weighted sum of a classification term and valence/arousal terms.

    Args:
        task: ``"multilabel"`` (BCE with logits on float 0/1 targets under ``label_key``, default
            ``"categories"``) or ``"multiclass"`` (cross-entropy on int targets, default key ``"expression"``;
            -1 means unlabelled).
        va_loss: ``mse``, ``l1``, ``huber``, ``ccc`` (1 - CCC) or ``ccc+mse`` (their sum).
        cls_weight, valence_weight, arousal_weight: weights of the three terms (0 switches one off).
        pos_weight: (C,) positive-class weights for the multi-label BCE (see :func:`compute_pos_weight`).
        label_smoothing: multiclass cross-entropy smoothing.
        huber_delta: Huber transition point (targets live in [-1, 1]).

    ``forward(outputs, batch)`` returns a dict of scalar tensors: ``loss`` (the weighted sum, to backpropagate),
    ``cls``, ``valence``, ``arousal`` (unweighted terms, for logging).
    """

    def __init__(
        self,
        task: str = "multilabel",
        va_loss: str = "ccc",
        cls_weight: float = 1.0,
        valence_weight: float = 1.0,
        arousal_weight: float = 1.0,
        pos_weight: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        huber_delta: float = 0.1,
        label_key: str | None = None,
    ) -> None:
        super().__init__()
        if task not in ("multilabel", "multiclass"):
            raise ValueError(f"task must be 'multilabel' or 'multiclass', got {task!r}")
        if va_loss not in VA_LOSSES:
            raise ValueError(f"unknown valence/arousal loss {va_loss!r}; choose one of {VA_LOSSES}")
        self.task = task
        self.va_loss = va_loss
        self.weights = {"cls": float(cls_weight), "valence": float(valence_weight), "arousal": float(arousal_weight)}
        self.label_smoothing = float(label_smoothing)
        self.huber_delta = float(huber_delta)
        self.label_key = label_key or ("categories" if task == "multilabel" else "expression")
        # A buffer so that .to(device) moves it and it is saved with nothing else.
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight).float(),
                             persistent=False)

    def classification_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        target = target.to(logits.device)
        if self.task == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=self.pos_weight)
        target = target.long().flatten()
        if bool((target < 0).all()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-1, label_smoothing=self.label_smoothing)

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.label_key not in batch:
            raise KeyError(f"batch has no {self.label_key!r} targets (keys: {sorted(batch)}); set label_key")
        terms = {
            "cls": self.classification_loss(outputs["expression"], batch[self.label_key]),
            "valence": regression_loss(self.va_loss, outputs["valence"], batch["valence"], self.huber_delta),
            "arousal": regression_loss(self.va_loss, outputs["arousal"], batch["arousal"], self.huber_delta),
        }
        total = sum(self.weights[name] * value for name, value in terms.items() if self.weights[name] != 0)
        if not isinstance(total, torch.Tensor):  # every weight is 0: keep a differentiable zero
            total = outputs["valence"].float().sum() * 0.0
        return {"loss": total, **{name: value.detach() for name, value in terms.items()}}

"""Applying the verification rule of reduced precisions (:func:`emonet.inference.backends.verify_rule`) to a
runner, on real face crops, with the verdict cached per machine, checkpoint and path.

The crops are the sample faces shipped in installed packages (:func:`emonet.inference.onnx.face_crops`,
augmented with a seed that int8 calibration never uses); the fp32 reference runs on them as they are and
+-1 grey level, which tells which faces the rule can judge (:func:`~emonet.inference.backends.stable_faces`).
Verdicts are JSON files under ``<cache>/verified/``, so a path is verified once, not at every start. A
verdict is checked on read (:func:`verdict_problem`: types, ranges, the current rule, and a ``passed`` that
follows from its own figures); an invalid one is measured again, never used.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emonet.devices import machine_fingerprint, machine_key
from emonet.fileio import write_json_atomic
from emonet.inference.backends import (
    RULE_EXPRESSION_AGREEMENT,
    RULE_MIN_STABLE_FACES,
    RULE_NOISE_GREY_LEVELS,
    RULE_VA_MEAN_ABS,
    verify_rule,
)
from emonet.inference.onnx import cache_dir, crops_to_batch, face_crops, model_fingerprint

# Crops of the verification set (cost: 3 fp32 passes + 1 candidate pass over them, once). 64, not 32: with
# about 31 stable faces one disagreement is already 96.8%, so ">= 97%" would mean "no disagreement at all";
# with about 62 one disagreement (98.4%) passes and three (95.2%) fail, as the rule states.
VERIFY_FACES = 64
VERIFY_SEED = 1  # int8 calibration uses seed 0: the rule is measured on other augmentations
VERIFY_VERSION = 2  # bump when the set or the rule's application changes: invalidates cached verdicts
_BATCH = 8

Outputs = dict[str, np.ndarray]


def verification_crops(n: int | None = None) -> list[np.ndarray]:
    """The face crops the rule is measured on (RGB uint8; held out from int8 calibration): ``n`` or
    :data:`VERIFY_FACES`."""
    return face_crops(n or VERIFY_FACES, seed=VERIFY_SEED, rotate=8.0)


def shifted(crops: Sequence[np.ndarray], levels: int) -> list[np.ndarray]:
    """The crops with ``levels`` grey levels added to every pixel (clipped to 0..255)."""
    return [np.clip(c.astype(np.int16) + levels, 0, 255).astype(np.uint8) for c in crops]


def run_batches(fn: Callable[[torch.Tensor], Outputs], x: torch.Tensor, batch_size: int = _BATCH) -> Outputs:
    """``fn`` over ``x`` in batches, outputs concatenated."""
    parts = [fn(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reference_outputs(model: nn.Module, crops: Sequence[np.ndarray]) -> tuple[Outputs, list[Outputs]]:
    """The fp32 eager reference on ``crops`` and on the crops +-1 grey level (:data:`RULE_NOISE_GREY_LEVELS`)."""
    model = model.cpu().eval()

    @torch.inference_mode()
    def forward(x: torch.Tensor) -> Outputs:
        out = model(x)
        return {k: out[k].float().numpy() for k in ("expression", "valence", "arousal")}

    ref = run_batches(forward, crops_to_batch(model, crops))
    noisy = [run_batches(forward, crops_to_batch(model, shifted(crops, d)))
             for d in (RULE_NOISE_GREY_LEVELS, -RULE_NOISE_GREY_LEVELS)]
    return ref, noisy


class VerificationSet:
    """Crops and the fp32 reference outputs on them (clean, +-1 grey level), computed once per model."""

    def __init__(self, model: nn.Module, crops: Sequence[np.ndarray] | None = None) -> None:
        self.model = model
        self.crops = list(crops) if crops is not None else verification_crops()
        self.x = crops_to_batch(model, self.crops)
        self.reference, self.perturbed = reference_outputs(model, self.crops)
        self.multi_label = bool(getattr(model, "multi_label", False))

    def judge(self, candidate: Callable[[torch.Tensor], Outputs]) -> dict:
        """The rule's figures and verdict for ``candidate`` (a runner or any batch -> outputs callable)."""
        start = time.perf_counter()
        out = run_batches(candidate, self.x)
        figures = verify_rule(self.reference, self.perturbed, out, self.multi_label)
        figures["seconds"] = round(time.perf_counter() - start, 2)
        return figures


def verdict_path(model: nn.Module, backend: str, precision: str, directory: str | os.PathLike | None = None) -> Path:
    """Where the verdict of ``backend``/``precision`` for ``model`` on this machine is kept."""
    arch = str(getattr(model, "arch", type(model).__name__))
    name = f"{arch}-{model_fingerprint(model)[:20]}-{machine_fingerprint()}-v{VERIFY_VERSION}-{backend}-{precision}.json"
    return cache_dir(directory) / "verified" / name


def _fraction(value: object, high: float = math.inf) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            and 0.0 <= value <= high)


def verdict_problem(data: object, backend: str, precision: str) -> str:
    """Why ``data`` (a cached verdict's JSON) cannot be used for ``backend``/``precision``, or ``""``: the
    figures' types and ranges, the rule they were judged by (the current one), and a ``passed`` that follows
    from them (a hand-edited ``passed: true`` over failing figures is refused)."""
    if not isinstance(data, dict):
        return f"not a JSON object ({type(data).__name__})"
    if (data.get("backend"), data.get("precision")) != (backend, precision):
        return f"a verdict of {data.get('backend')}/{data.get('precision')}, not {backend}/{precision}"
    n_faces, n_stable = data.get("n_faces"), data.get("n_stable")
    if not (type(n_faces) is int and type(n_stable) is int and 0 <= n_stable <= n_faces):
        return f"invalid face counts ({n_faces!r:.20}, {n_stable!r:.20})"
    rule = {"va_mean_abs": RULE_VA_MEAN_ABS, "expression_agreement": RULE_EXPRESSION_AGREEMENT,
            "noise_grey_levels": RULE_NOISE_GREY_LEVELS, "min_stable_faces": RULE_MIN_STABLE_FACES}
    if data.get("rule") != rule:
        return "judged by another rule"
    if not isinstance(data.get("passed"), bool):
        return "field 'passed' is missing or not a boolean"
    if data["passed"] is False:
        return ""  # a refusal is safe to reuse whatever its figures (NaN outputs give NaN figures)
    va, agreement = data.get("va_mean_abs"), data.get("expression_agreement")
    if not (_fraction(va) and _fraction(agreement, 1.0)):
        return "field 'va_mean_abs' or 'expression_agreement' is missing or out of range"
    follows = n_stable >= RULE_MIN_STABLE_FACES and va <= RULE_VA_MEAN_ABS and agreement >= RULE_EXPRESSION_AGREEMENT
    return "" if data["passed"] == follows else "'passed' does not follow from the figures"


def _read_verdict(path: Path, backend: str, precision: str) -> dict | None:
    """The cached verdict in ``path`` if it is valid; None when missing, unreadable or invalid (re-measured)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable or half-written
        return None
    return None if verdict_problem(data, backend, precision) else data


def cached_verdict(
    model: nn.Module, backend: str, precision: str, runner: Callable[[torch.Tensor], Outputs],
    directory: str | os.PathLike | None = None, verification: Callable[[], VerificationSet] | None = None,
) -> dict:
    """The rule's verdict on ``runner`` (``backend``/``precision`` of ``model``), measured once per machine
    and checkpoint and cached (``cached: True`` when read back; an invalid file is measured again).
    ``verification`` gives the crops and reference outputs (3 fp32 passes): called only when the verdict
    must be measured."""
    path = verdict_path(model, backend, precision, directory)
    cached = _read_verdict(path, backend, precision)
    if cached is not None:
        return {**cached, "cached": True, "path": str(path)}
    figures = (verification() if verification is not None else VerificationSet(model)).judge(runner)
    figures.update(backend=backend, precision=precision, machine=machine_key(),
                   measured_on=time.strftime("%Y-%m-%d %H:%M:%S"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, figures)
    return {**figures, "cached": False, "path": str(path)}

"""``python -m emonet models``: the registered model families, the dual-head backbones, the official weights
with their published scores, and (``--checkpoint PATH``) one checkpoint's model card."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
from collections.abc import Mapping
from typing import Any

HELP = "list the model families, backbones and official weights (with published scores), or show a checkpoint's card"
DESCRIPTION = (
    HELP + ". A checkpoint's card says what it was trained for and how it scored: task, dataset, split, backbone, "
    "input size, normalisation, classes, test metrics, teacher (distilled students) and the version that wrote it."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="PATH",
                   help="print this checkpoint's model card (a project checkpoint, an official file or name)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: %(default)s)")


def _first_line(builder: Any) -> str:
    return (inspect.getdoc(builder) or "").splitlines()[0] if inspect.getdoc(builder) else ""


def _is_score_row(value: Any) -> bool:
    """A row in the paper's layout (``acc``, ``valence``/``arousal`` -> metric -> value)."""
    return isinstance(value, Mapping) and any(isinstance(value.get(k), Mapping) for k in ("valence", "arousal"))


def _scores(row: Mapping[str, Any]) -> str:
    """One published row as ``acc 0.75; valence ccc 0.82 pcc 0.82 ...``."""
    parts = [f"acc {row['acc']:g}"] if "acc" in row else []
    for target in ("valence", "arousal"):
        if isinstance(row.get(target), Mapping):
            parts.append(f"{target} " + " ".join(f"{k} {v:g}" for k, v in row[target].items()))
    return "; ".join(parts)


def catalogue() -> dict[str, Any]:
    """What ``models`` lists, as plain data: families, backbones, official weights."""
    from emonet.hub import OFFICIAL_WEIGHTS  # lazy: PyTorch only for this command
    from emonet.models import list_models, model_builder
    from emonet.models.dual_head import TIMM_PREFIX, torchvision_backbones

    timm_spec = importlib.util.find_spec("timm")  # found, never imported (timm loads only for a timm backbone)
    return {
        "families": {name: _first_line(model_builder(name)) for name in list_models()},
        "backbones": {
            "torchvision": torchvision_backbones(),
            "timm": f"{TIMM_PREFIX}<any timm model name>" + ("" if timm_spec else " (timm not installed: pip install timm)"),
        },
        "weights": {
            name: {"arch": w.arch, "classes": len(w.class_names), "input_size": w.input_size, "license": w.license,
                   "published": {k: dict(v) for k, v in w.published.items()}}
            for name, w in OFFICIAL_WEIGHTS.items()
        },
    }


def _print_catalogue(info: dict[str, Any]) -> None:
    print("Model families (create_model / checkpoint arch):")
    for name, doc in info["families"].items():
        print(f"  {name:20s} {doc}")
    print("\nBackbones of dual_head (train --backbone NAME):")
    print("  torchvision: " + ", ".join(info["backbones"]["torchvision"]))
    print(f"  timm: {info['backbones']['timm']}")
    print("\nOfficial weights (--weights NAME; downloaded on first use):")
    for name, w in info["weights"].items():
        print(f"  {name}: {w['arch']}, {w['classes']} classes, {w['input_size']} px, licence {w['license']}")
        for dataset, row in w["published"].items():
            print(f"    {dataset}: {_scores(row)}" + (f"  ({row['note']})" if row.get("note") else ""))


def _print_card(card: Mapping[str, Any]) -> None:
    for key, value in card.items():
        if key == "metrics" and isinstance(value, Mapping) and _is_score_row(value):
            print(f"metrics: {_scores(value)}")
        elif key == "metrics" and isinstance(value, Mapping) and value:
            print("metrics:")
            for name, metric in value.items():  # per dataset or split
                print(f"  {name}: {_scores(metric) if _is_score_row(metric) else json.dumps(metric)}")
        else:
            print(f"{key}: {value if isinstance(value, str) or value is None else json.dumps(value)}")


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        info = catalogue()
        print(json.dumps(info, indent=2)) if args.format == "json" else _print_catalogue(info)
        return 0
    from emonet.checkpoint import load_model  # lazy: see catalogue

    card = load_model(args.checkpoint, device="cpu").card
    print(json.dumps(card, indent=2)) if args.format == "json" else _print_card(card)
    return 0

"""Small datasets written in the real on-disk formats, from real images shipped by installed packages.

Used by tests, benchmarks and the quickstart: no download. Each writer is a self-contained function.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pandas as pd

from emonet.classes import EMOTIC_CATEGORIES
from emonet.samples import sample_image

# ----------------------------------------------------------------------------------------------------------
# EMOTIC (Kaggle layout): annot_arrs_{split}.csv + img_arrs/img_arr_N.npy + img_arrs/crop_arr_{split}_{i}.npy
# ----------------------------------------------------------------------------------------------------------

DEFAULT_EMOTIC_SPLITS: Mapping[str, int] = MappingProxyType({"train": 24, "val": 8, "test": 8})
EMOTIC_FIXTURE_SPLITS = ("train", "val", "test", "extra_train")

# Face boxes (x1, y1, x2, y2) in the sample images: union of the MediaPipe detector box and the FaceMesh
# landmark box, measured once (fixed so the fixture needs no detection and stays deterministic).
_EMOTIC_FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "astronaut": (178, 71, 273, 178),
    "grace_hopper": (171, 132, 366, 341),
    "camera": (180, 122, 265, 207),
}
_EMOTIC_NON_FACES = ("chelsea", "coffee", "rocket")


def _annotator_average(rng: np.random.Generator) -> float:
    # EMOTIC V/A/D are averages of 1-3 annotators' integer 1-10 ratings (e.g. 6.666666666666667).
    return float(np.mean(rng.integers(1, 11, size=int(rng.integers(1, 4)))))


def _augment_full_image(
    image: np.ndarray, face: tuple[int, int, int, int] | None, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """Random crop (keeping the whole face), horizontal flip and rescale to 200-320 px on the long side."""
    h, w = image.shape[:2]
    if face is not None:
        fx1, fy1, fx2, fy2 = face
        x0, y0 = int(rng.integers(0, fx1 // 2 + 1)), int(rng.integers(0, fy1 // 2 + 1))
        x1, y1 = int(w - rng.integers(0, (w - fx2) // 2 + 1)), int(h - rng.integers(0, (h - fy2) // 2 + 1))
    else:
        x0, y0 = int(rng.integers(0, w // 5 + 1)), int(rng.integers(0, h // 5 + 1))
        x1, y1 = int(w - rng.integers(0, w // 5 + 1)), int(h - rng.integers(0, h // 5 + 1))
    out = image[y0:y1, x0:x1]
    box = None if face is None else (face[0] - x0, face[1] - y0, face[2] - x0, face[3] - y0)
    if rng.random() < 0.5:
        out = out[:, ::-1]
        if box is not None:
            box = (out.shape[1] - box[2], box[1], out.shape[1] - box[0], box[3])
    scale = float(rng.uniform(200, 320)) / max(out.shape[:2])
    out = cv2.resize(np.ascontiguousarray(out), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if box is not None:
        box = tuple(v * scale for v in box)
    return np.ascontiguousarray(out), box


def _person_box(
    size: tuple[int, int],
    face: tuple[float, float, float, float] | None,
    cut_face: bool,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """A person-like box: around and below the face (whole face inside unless ``cut_face``), else random."""
    h, w = size
    if face is None:
        bw, bh = int(w * rng.uniform(0.3, 0.9)), int(h * rng.uniform(0.3, 0.9))
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        return x0, y0, x0 + bw, y0 + bh
    fx1, fy1, fx2, fy2 = face
    fw, fh = fx2 - fx1, fy2 - fy1
    x0 = fx1 - rng.uniform(0.2, 1.0) * fw
    x1 = fx1 + rng.uniform(0.4, 0.6) * fw if cut_face else fx2 + rng.uniform(0.2, 1.0) * fw
    y0 = fy1 - rng.uniform(0.1, 0.5) * fh
    y1 = fy2 + rng.uniform(1.0, 3.0) * fh
    # floor/ceil keep the whole face inside when the box is clipped to the image.
    x0, y0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    return x0, y0, min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))


def write_emotic_fixture(
    root: str | os.PathLike, n_per_split: Mapping[str, int] = DEFAULT_EMOTIC_SPLITS, seed: int = 0
) -> Path:
    """Write a small EMOTIC dataset in the Kaggle layout under ``root`` and return ``root``.

    Writes ``annot_arrs_{split}.csv`` (the exact 40 columns) for each split in ``n_per_split`` (``train``,
    ``val``, ``test``; add ``"extra_train": n`` for ``annot_arrs_extra_train.csv``),
    ``img_arrs/img_arr_N.npy`` (full images, RGB uint8; some are shared by two persons as in EMOTIC) and
    ``img_arrs/crop_arr_{split}_{i}.npy`` (person crops), plus ``fixture_manifest.json`` telling for each row
    its source image and whether the crop holds a whole face (``face``), half a face (``cut_face``) or none
    (``no_face``). About half of the crops show a face, from the real face samples of :mod:`emonet.samples`
    (astronaut, grace_hopper, camera); the others come from chelsea, coffee and rocket. Labels are generated:
    V/A/D on the 1-10 scale as annotator averages, 1-3 positive categories per row.
    """
    from emonet.data.emotic import EMOTIC_COLUMNS  # lazy: that module imports PyTorch, the other writers do not

    unknown = set(n_per_split) - set(EMOTIC_FIXTURE_SPLITS)
    if unknown:
        raise ValueError(f"unknown EMOTIC splits {sorted(unknown)}; choose from {EMOTIC_FIXTURE_SPLITS}")
    root = Path(root)
    arrays = root / "img_arrs"
    arrays.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = {name: sample_image(name) for name in (*_EMOTIC_FACE_BOXES, *_EMOTIC_NON_FACES)}
    manifest: dict[str, list[dict]] = {}
    arr_counter = 0
    for split, count in n_per_split.items():
        rows, entries = [], []
        offset = int(rng.integers(0, 3))
        previous: tuple[str, np.ndarray, tuple | None, str] | None = None
        for i in range(int(count)):
            if previous is not None and rng.random() < 0.2:
                # A second annotated person in the same image: EMOTIC rows share Arr_name this way.
                source, full, face, arr_name = previous
            else:
                # Alternate face / non-face sources: about half the crops show a face, as in EMOTIC.
                pool = list(_EMOTIC_FACE_BOXES) if i % 2 == 0 else list(_EMOTIC_NON_FACES)
                source = pool[(i // 2 + offset) % len(pool)]
                full, face = _augment_full_image(sources[source], _EMOTIC_FACE_BOXES.get(source), rng)
                arr_name = f"img_arr_{arr_counter}.npy"
                arr_counter += 1
                np.save(arrays / arr_name, full)
                previous = (source, full, face, arr_name)
            cut_face = face is not None and rng.random() < 0.2
            x0, y0, x1, y1 = _person_box(full.shape[:2], face, cut_face, rng)
            crop_name = f"crop_arr_{split}_{i}.npy"
            np.save(arrays / crop_name, np.ascontiguousarray(full[y0:y1, x0:x1]))
            categories = np.zeros(len(EMOTIC_CATEGORIES), dtype=int)
            categories[rng.choice(len(EMOTIC_CATEGORIES), size=int(rng.integers(1, 4)), replace=False)] = 1
            rows.append([
                f"fixture_{source}_{split}_{i:04d}.jpg", full.shape[1], full.shape[0],
                str(rng.choice(["Adult", "Teenager", "Kid"])), str(rng.choice(["Male", "Female"])),
                _annotator_average(rng), _annotator_average(rng), _annotator_average(rng),
                *categories.tolist(), x0, y0, x1, y1, arr_name, crop_name,
            ])
            kind = "no_face" if face is None else ("cut_face" if cut_face else "face")
            entries.append({"row": i, "source": source, "kind": kind, "Crop_name": crop_name})
        pd.DataFrame(rows, columns=EMOTIC_COLUMNS).to_csv(root / f"annot_arrs_{split}.csv", index=False)
        manifest[split] = entries
    (root / "fixture_manifest.json").write_text(json.dumps({"seed": seed, "splits": manifest}, indent=1))
    return root


# ----------------------------------------------------------------------------------------------------------
# Emodataset ({split}_labels.csv + {split}/<label>/*.jpg) and AffectNet (Kaggle npy layout, original CSV)
# ----------------------------------------------------------------------------------------------------------

# MediaPipe face-detector boxes (x1, y1, x2, y2) in the sample images, measured once (no detection needed).
_AFFECT_FACE_BOXES: dict[str, tuple[int, int, int, int]] = {
    "astronaut": (173, 67, 277, 171),
    "grace_hopper": (165, 128, 366, 328),
    "camera": (199, 122, 275, 198),
}
_AFFECT_LABELS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")


def _landmark_template() -> np.ndarray:
    """A coarse 68-point face shape in the unit box (iBUG order: jaw, brows, nose, eyes, mouth)."""
    t = np.linspace(0.0, 1.0, 17)
    jaw = np.stack([0.5 - 0.5 * np.cos(np.pi * t), 0.3 + 0.7 * np.sin(np.pi * t)], 1)
    brow_x = np.linspace(0.1, 0.4, 5)
    brows = np.concatenate([np.stack([brow_x, 0.2 - 0.05 * np.sin(np.pi * (brow_x - 0.1) / 0.3)], 1),
                            np.stack([brow_x + 0.5, 0.2 - 0.05 * np.sin(np.pi * (brow_x - 0.1) / 0.3)], 1)])
    bridge = np.stack([np.full(4, 0.5), np.linspace(0.3, 0.55, 4)], 1)
    nostrils = np.stack([np.linspace(0.4, 0.6, 5), np.full(5, 0.62)], 1)
    a6 = np.linspace(np.pi, -np.pi, 6, endpoint=False)
    eyes = np.concatenate([np.stack([cx + 0.1 * np.cos(a6), 0.35 + 0.04 * np.sin(a6)], 1) for cx in (0.3, 0.7)])
    a12, a8 = np.linspace(np.pi, -np.pi, 12, endpoint=False), np.linspace(np.pi, -np.pi, 8, endpoint=False)
    mouth = np.concatenate([np.stack([0.5 + 0.2 * np.cos(a12), 0.8 + 0.08 * np.sin(a12)], 1),
                            np.stack([0.5 + 0.12 * np.cos(a8), 0.8 + 0.03 * np.sin(a8)], 1)])
    points = np.concatenate([jaw, brows, bridge, nostrils, eyes, mouth])
    assert points.shape == (68, 2)
    return points


def _face_landmarks(box: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Synthetic 68 landmarks (image pixels) spanning a face box, with a little jitter."""
    x1, y1, x2, y2 = box
    template = _landmark_template() + rng.normal(0.0, 0.01, (68, 2))
    return np.stack([x1 + template[:, 0] * (x2 - x1), y1 + template[:, 1] * (y2 - y1)], 1).astype(np.float32)


def _random_face_view(
    source: str, rng: np.random.Generator, margin: tuple[float, float], out_side: int | None
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A random crop around the face of a sample image (margin = extra size as a fraction of the face),
    randomly flipped, resized to ``out_side`` (square) or to 240-400 px on the long side (``None``)."""
    image = sample_image(source)
    h, w = image.shape[:2]
    fx1, fy1, fx2, fy2 = _AFFECT_FACE_BOXES[source]
    fw, fh = fx2 - fx1, fy2 - fy1
    if out_side is not None:  # square face crop (Kaggle 224 crops, Emodataset)
        side = max(fw, fh) * (1.0 + rng.uniform(*margin))
        cx = (fx1 + fx2) / 2 + rng.uniform(-0.08, 0.08) * fw
        cy = (fy1 + fy2) / 2 + rng.uniform(-0.08, 0.08) * fh
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    else:  # a larger view with background (original AffectNet images)
        x0 = int(rng.integers(0, max(1, int(fx1 - margin[0] * fw)) + 1))
        y0 = int(rng.integers(0, max(1, int(fy1 - margin[0] * fh)) + 1))
        x1 = int(w - rng.integers(0, max(1, int(w - fx2 - margin[0] * fw)) + 1))
        y1 = int(h - rng.integers(0, max(1, int(h - fy2 - margin[0] * fh)) + 1))
    view = image[y0:y1, x0:x1]
    box = [fx1 - x0, fy1 - y0, fx2 - x0, fy2 - y0]
    if rng.random() < 0.5:
        view = view[:, ::-1]
        box = [view.shape[1] - box[2], box[1], view.shape[1] - box[0], box[3]]
    if out_side is not None:
        sx, sy = out_side / view.shape[1], out_side / view.shape[0]
        view = cv2.resize(np.ascontiguousarray(view), (out_side, out_side), interpolation=cv2.INTER_AREA)
    else:
        sx = sy = float(rng.uniform(240, 400)) / max(view.shape[:2])
        view = cv2.resize(np.ascontiguousarray(view), None, fx=sx, fy=sy, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(view), (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"{path}: cannot write JPEG")


def write_emodataset_fixture(
    root: str | os.PathLike,
    n_train: int = 16,
    n_test: int = 8,
    arousal_range: tuple[float, float] = (0, 1),
    seed: int = 0,
) -> Path:
    """Write a small Emodataset (Kaggle ``susmitdas1053/emodataset`` layout) under ``root``; returns ``root``.

    ``train_labels.csv``/``test_labels.csv`` with an unnamed index column, ``pth`` (``<label>/<name>.jpg``,
    relative to the split folder), ``label`` (lower-case AffectNet names), ``valence`` in [-0.9, 0.9] and
    ``arousal`` in ``arousal_range`` ((0, 1) as the real dataset, or (-1, 1)); images ``{split}/<label>/*.jpg``
    are 96-160 px face crops of the real sample faces (random crop, flip). Labels are generated.
    """
    lo, hi = (float(v) for v in arousal_range)
    if (lo, hi) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"arousal_range must be (0, 1) or (-1, 1), got {arousal_range!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    sources = list(_AFFECT_FACE_BOXES)
    for split, count in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(int(count)):
            label = _AFFECT_LABELS[int(rng.integers(0, 8))]
            view, _ = _random_face_view(sources[i % len(sources)], rng, (0.1, 0.5), int(rng.integers(96, 161)))
            rel = f"{label}/image{i:07d}.jpg"
            _write_jpeg(root / split / rel, view)
            rows.append({"pth": rel, "label": label, "valence": round(float(rng.uniform(-0.9, 0.9)), 6),
                         "arousal": round(float(rng.uniform(lo, hi)), 6)})
        pd.DataFrame(rows, columns=["pth", "label", "valence", "arousal"]).to_csv(root / f"{split}_labels.csv")
    return root


def write_csv_faces_fixture(root: str | os.PathLike, n_train: int = 12, n_val: int = 6, n_test: int = 6,
                            labels: bool = True, seed: int = 0) -> Path:
    """Write a small ``--dataset csv`` folder under ``root``: ``train.csv``, ``val.csv``, ``test.csv`` with
    ``path,label,valence,arousal`` (``labels=False``: no label column, valence/arousal only), paths relative
    to the folder, images ``faces/<split>_<i>.jpg`` (96-160 px crops of the real sample faces; labels and V/A
    generated, V/A in [-1, 1]). Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    sources = list(_AFFECT_FACE_BOXES)
    for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows = []
        for i in range(int(count)):
            view, _ = _random_face_view(sources[i % len(sources)], rng, (0.1, 0.5), int(rng.integers(96, 161)))
            rel = f"faces/{split}_{i:05d}.jpg"
            _write_jpeg(root / rel, view)
            row = {"path": rel, "label": _AFFECT_LABELS[int(rng.integers(0, 8))],
                   "valence": round(float(rng.uniform(-0.9, 0.9)), 6), "arousal": round(float(rng.uniform(-0.9, 0.9)), 6)}
            rows.append(row if labels else {k: v for k, v in row.items() if k != "label"})
        pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)
    return root


def write_affectnet_fixture(root: str | os.PathLike, n: int = 16, layout: str = "kaggle", seed: int = 0) -> Path:
    """Write a small AffectNet under ``root`` in the Kaggle or the original CSV layout; returns ``root``.

    * ``layout="kaggle"``: ``images/<id>.jpg`` (224x224 face crops) and ``annotations/<id>_exp.npy``,
      ``_val.npy``, ``_aro.npy``, ``_lnd.npy`` (136 float32 = 68 x, y in the crop's pixels). Every other id
      stores exp/val/aro as numpy string scalars (as some public copies do), the others as numbers.
    * ``layout="csv"``: ``validation.csv`` with the original columns and full images under
      ``Manually_Annotated_Images/<subdir>/``; ``n`` valid rows followed by 5 invalid ones: expression 8, 9
      and 10 (valence/arousal -2, as AffectNet marks them) and two rows with a valid expression but valence
      or arousal -2.

    Images are random crops/flips of the real sample faces; landmarks are a synthetic 68-point shape spanning
    the face box (mirrored in position, not re-indexed, on flipped images); labels and V/A are generated.
    """
    if layout not in ("kaggle", "csv"):
        raise ValueError(f"layout must be 'kaggle' or 'csv', got {layout!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    sources = list(_AFFECT_FACE_BOXES)
    if layout == "kaggle":
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        for i in range(int(n)):
            view, box = _random_face_view(sources[i % len(sources)], rng, (0.3, 0.8), 224)
            _write_jpeg(root / "images" / f"{i}.jpg", view)
            exp = int(rng.integers(0, 8))
            val, aro = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))
            ann = root / "annotations"
            if i % 2 == 0:  # numpy string scalars: np.load gives array('3', dtype='<U1')
                np.save(ann / f"{i}_exp.npy", np.array(str(exp)))
                np.save(ann / f"{i}_val.npy", np.array(repr(val)))
                np.save(ann / f"{i}_aro.npy", np.array(repr(aro)))
            else:
                np.save(ann / f"{i}_exp.npy", np.array(exp, dtype=np.int64))
                np.save(ann / f"{i}_val.npy", np.array(val, dtype=np.float64))
                np.save(ann / f"{i}_aro.npy", np.array(aro, dtype=np.float64))
            np.save(ann / f"{i}_lnd.npy", _face_landmarks(box, rng).reshape(-1))
        return root
    rows = []
    invalid = [(8, -2.0, -2.0), (9, -2.0, -2.0), (10, -2.0, -2.0), (1, -2.0, 0.5), (2, 0.3, -2.0)]
    for i in range(int(n) + len(invalid)):
        view, box = _random_face_view(sources[i % len(sources)], rng, (0.2, 1.0), None)
        rel = f"{100 + i % 4}/fixture_{i:05d}.jpg"
        _write_jpeg(root / "Manually_Annotated_Images" / rel, view)
        if i < n:
            exp, val, aro = int(rng.integers(0, 8)), float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))
        else:
            exp, val, aro = invalid[i - int(n)]
        landmarks = _face_landmarks(box, rng)
        x1, y1 = landmarks.min(0)
        x2, y2 = landmarks.max(0)
        rows.append({
            "subDirectory_filePath": rel, "face_x": int(x1), "face_y": int(y1),
            "face_width": int(x2 - x1), "face_height": int(y2 - y1),
            "facial_landmarks": ";".join(f"{v:.2f}" for v in landmarks.reshape(-1)),
            "expression": exp, "valence": round(val, 6), "arousal": round(aro, 6),
        })
    columns = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
               "expression", "valence", "arousal"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "validation.csv", index=False)
    return root


# ----------------------------------------------------------------------------------------------------------
# Video V/A datasets: AFEW-VA (clip folders + NNN.json), Aff-Wild2 (ABAW VA annotations + cropped_aligned or
# raw videos). Frames show the real sample faces moving a little; V/A follow smooth trajectories.
# ----------------------------------------------------------------------------------------------------------

def va_trajectory(n: int, seed: int, scale: float = 0.8) -> np.ndarray:
    """(n, 2) smooth valence/arousal in [-scale, scale]: a slow sine per dimension, phase and period by seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.float64)
    periods = rng.uniform(max(n, 4) * 0.6, max(n, 4) * 1.6, 2)
    phases = rng.uniform(0, 2 * np.pi, 2)
    return np.stack([scale * np.sin(2 * np.pi * t / periods[k] + phases[k]) for k in range(2)], 1)


def _face_sprite(source: str, side: int, context: float = 2.0) -> tuple[np.ndarray, tuple[float, ...]]:
    """A square view of a sample face (``context`` x the face box), resized to ``side``; and the face box
    (x1, y1, x2, y2) inside it."""
    image = sample_image(source)
    x1, y1, x2, y2 = _AFFECT_FACE_BOXES[source]
    size = context * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    s = int(round(size))
    padded = np.zeros((s, s, 3), np.uint8)
    h, w = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    padded[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = image[sy0:sy1, sx0:sx1]
    ratio = side / s
    sprite = cv2.resize(padded, (side, side), interpolation=cv2.INTER_AREA)
    return sprite, ((x1 - x0) * ratio, (y1 - y0) * ratio, (x2 - x0) * ratio, (y2 - y0) * ratio)


def _scene(size: tuple[int, int], sprites: list[tuple[np.ndarray, int, int]], shade: int) -> np.ndarray:
    """A plain gradient background (w, h) with sprites pasted at (x0, y0)."""
    w, h = size
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    frame = (np.array([60, 70, 80], np.float32) + shade + 60 * ys + np.zeros((1, w, 1), np.float32)).clip(0, 255)
    frame = frame.astype(np.uint8)
    for sprite, x0, y0 in sprites:
        s = sprite.shape[0]
        frame[y0: y0 + s, x0: x0 + s] = sprite
    return np.ascontiguousarray(frame)


def write_afew_va_fixture(root: str | os.PathLike, n_clips: int = 4, n_frames: int = 6, seed: int = 0) -> Path:
    """Write a small AFEW-VA under ``root``: clip folders ``001``.., frames ``00000.png``.. (320x240 scenes of
    a real sample face drifting), and ``NNN/NNN.json`` with per-frame integer valence/arousal in [-10, 10] and
    68 landmarks spanning the face (synthetic shape). Returns ``root``."""
    root = Path(root)
    sources = list(_AFFECT_FACE_BOXES)
    rng = np.random.default_rng(seed)
    for c in range(1, int(n_clips) + 1):
        clip = root / f"{c:03d}"
        clip.mkdir(parents=True, exist_ok=True)
        sprite, box = _face_sprite(sources[(c - 1) % len(sources)], 180)
        va = np.rint(10 * va_trajectory(n_frames, seed * 1000 + c, 0.9)).astype(int)
        frames = {}
        for i in range(int(n_frames)):
            x0, y0 = 70 + int(round(10 * np.sin(i / 3.0))), 30 + int(round(5 * np.cos(i / 4.0)))
            scene = _scene((320, 240), [(sprite, x0, y0)], 10 * c)
            if not cv2.imwrite(str(clip / f"{i:05d}.png"), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{clip / f'{i:05d}.png'}: cannot write PNG")
            face = (box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0)
            frames[f"{i:05d}"] = {"valence": int(va[i, 0]), "arousal": int(va[i, 1]),
                                  "landmarks": np.round(_face_landmarks(face, rng), 2).tolist()}
        (clip / f"{c:03d}.json").write_text(json.dumps({"video_id": f"{c:03d}", "frames": frames}), encoding="utf-8")
    return root


def write_affwild2_fixture(
    root: str | os.PathLike, n_frames: int = 12, videos: bool = True, seed: int = 0
) -> Path:
    """Write a small Aff-Wild2 (ABAW VA track) under ``root``; returns ``root``.

    * ``Annotations/VA_Estimation_Challenge/Train_Set/``: ``solo_a.txt``, ``pair_left.txt``;
      ``Validation_Set/``: ``solo_b.txt``, ``pair_right.txt`` (header ``valence,arousal``, one line per frame,
      values rounded to 3 decimals). Frames 2 and 3 of every video are ``-5,-5`` (invalid), and ``solo_b``
      frame 5 has ``-5`` for arousal only.
    * ``cropped_aligned/<video>/00001.jpg`` (1-based): 112x112 face crops; frame 7 (``00008.jpg``) of every
      video is missing (no face found by the organisers).
    * with ``videos``: ``videos/solo_a.mp4``, ``videos/solo_b.mp4`` (one face) and ``videos/pair.mp4`` (640x360,
      astronaut on the left, grace_hopper on the right).
    """
    root = Path(root)
    people = {"solo_a": ["astronaut"], "solo_b": ["grace_hopper"], "pair": ["astronaut", "grace_hopper"]}
    annotated = {"Train_Set": ["solo_a", "pair_left"], "Validation_Set": ["solo_b", "pair_right"]}
    sprite_side = 200
    sprites = {name: _face_sprite(name, sprite_side) for name in ("astronaut", "grace_hopper")}
    for k, (folder, names) in enumerate(annotated.items()):
        target = root / "Annotations" / "VA_Estimation_Challenge" / folder
        target.mkdir(parents=True, exist_ok=True)
        for j, video in enumerate(names):
            va = va_trajectory(n_frames, seed * 100 + 10 * k + j)
            lines = ["valence,arousal"]
            for i in range(int(n_frames)):
                v, a = (f"{x:.3f}" for x in va[i])
                if i in (2, 3):
                    v, a = "-5", "-5"
                if video == "solo_b" and i == 5:
                    a = "-5"
                lines.append(f"{v},{a}")
            (target / f"{video}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            base = video.rsplit("_", 1)[0] if video.startswith("pair") else video
            person = people[base][1 if video.endswith("_right") else 0]
            sprite, box = sprites[person]
            crops = root / "cropped_aligned" / video
            crops.mkdir(parents=True, exist_ok=True)
            for i in range(int(n_frames)):
                if i == 7:
                    continue
                x1, y1, x2, y2 = box
                side = 1.3 * max(x2 - x1, y2 - y1)
                cx, cy = (x1 + x2) / 2 + 2 * np.sin(i), (y1 + y2) / 2
                y0, x0 = int(cy - side / 2), int(cx - side / 2)
                face = sprite[max(y0, 0): int(y0 + side), max(x0, 0): int(x0 + side)]
                _write_jpeg(crops / f"{i + 1:05d}.jpg", cv2.resize(face, (112, 112), interpolation=cv2.INTER_AREA))
    if videos:
        (root / "videos").mkdir(parents=True, exist_ok=True)
        for base, faces in people.items():
            path = root / "videos" / f"{base}.mp4"
            size = (640, 360)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
            if not writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot open an mp4v video writer")
            try:
                for i in range(int(n_frames)):
                    dx = int(round(6 * np.sin(i / 2.0)))
                    placed = [(sprites[f][0], (40 if len(faces) > 1 else 220) + 360 * n + dx, 80)
                              for n, f in enumerate(faces)]
                    writer.write(cv2.cvtColor(_scene(size, placed, 0), cv2.COLOR_RGB2BGR))
            finally:
                writer.release()
    return root

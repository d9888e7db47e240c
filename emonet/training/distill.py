"""Distilling a teacher (EmoNet) into a fast student: ``python -m emonet distill``.

Three steps, each reusing the project's one path for its job:

1. **Teacher labels, once.** The teacher annotates the unlabelled faces of ``--data`` (images, folders, videos,
   manifests) through the corpus engine (:func:`emonet.batch.run_job`, local engine): faces detected and cropped
   by the teacher's protocol, optional flip TTA, Parquet shards with a ledger in ``OUT/teacher_job/`` (a killed
   run resumes where it stopped). The face rows are gathered into ``OUT/teacher_labels.parquet``, whose Parquet
   metadata records the teacher checkpoint's SHA-256, the options and the inputs: a rerun with the same ones
   reuses it (no teacher pass); another teacher or other options relabel, with a line saying why.
2. **Crops.** The square each face row records (``crop_x0``, ``crop_y0``, ``crop_side``: what the teacher saw)
   is cut from its image or video frame and resized to the student's input size, once, into
   ``OUT/crops_<size>.npy`` (reused while the labels are the same).
3. **Student training** on the same :class:`~emonet.training.Trainer` as ``train``/``finetune``, with
   :class:`DistillationLoss`: valence/arousal CCC (+ MSE) against the teacher's values, KL divergence of the
   expression distributions at temperature T (scaled by T^2), and, where ground truth exists (``--truth`` or
   a ``--data`` CSV with ``valence``/``arousal`` columns), the truth's CCC and cross-entropy with a weight.
   Validation (a held-out share of the inputs, split by input so frames of one video stay together) scores
   the student against the teacher (``val_va_ccc``: CCC with the teacher; ``val_acc``: expression agreement).
   ``best.pth``/``last.pth`` are normal project checkpoints whose model card (``model.card`` after
   :func:`emonet.load_model`) has ``task`` distillation and a ``teacher`` entry: the teacher's name, file and
   SHA-256, temperature, loss weights, the data and how many faces taught it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from emonet.batch.inputs import InputItem, expand_inputs
from emonet.batch.job import run_job
from emonet.batch.output import JOB, ROWS_DIR, batch_columns, open_output
from emonet.batch.pipeline import Assembler, BatchConfig, driver_predictor
from emonet.errors import UserError
from emonet.faces import CropRegion, crop_region_image
from emonet.fileio import atomic_path, file_sha256
from emonet.images import read_image
from emonet.models.registry import create_model
from emonet.predictor import CROP_COLUMNS
from emonet.training import FitResult, ImageTransform, TrainConfig, Trainer
from emonet.training.losses import distillation_kl, regression_loss
from emonet.video.sources import open_source

logger = logging.getLogger("emonet.training.distill")

LABELS_FILE = "teacher_labels.parquet"
LABEL_JOB_DIR = "teacher_job"
LABELS_METADATA_KEY = b"emonet.distill.labels"
CROPS_PATTERN = "crops_{size}.npy"


# -- 1. teacher labels ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeacherLabelling:
    """How the teacher labels the faces: its checkpoint (a file), the inputs and the corpus engine's options."""

    teacher: str
    inputs: tuple[str, ...]
    flip_tta: bool = False
    detector: str | None = "auto"
    crop: str = "mesh"
    min_face_score: float = 0.5
    device: str = "auto"
    batch_size: int | None = None
    frame_stride: int = 1
    max_frames: int | None = None

    def batch_config(self) -> BatchConfig:
        return BatchConfig(weights=str(Path(self.teacher).resolve()), device=self.device, detector=self.detector,
                           min_face_score=self.min_face_score, crop=self.crop, flip_tta=self.flip_tta,
                           batch_size=self.batch_size, frame_stride=self.frame_stride, max_frames=self.max_frames)


@dataclass
class TeacherLabels:
    """The cached teacher outputs: one row per face (``source``, ``kind``, ``frame``, ``face_id``, the crop
    square, ``valence``, ``arousal``, ``p_<class>``), the class names, and how this run got them."""

    frame: pd.DataFrame
    class_names: list[str]
    record: dict[str, Any]
    reused: bool
    summary: dict[str, Any] | None = None

    @property
    def probabilities(self) -> np.ndarray:
        return self.frame[[f"p_{name}" for name in self.class_names]].to_numpy(np.float32)


def _labels_record(spec: TeacherLabelling, config: BatchConfig, items: Sequence[InputItem]) -> dict[str, Any]:
    """What decides the cached labels: the teacher's SHA-256, the engine's options and the inputs."""
    return {"teacher": str(Path(spec.teacher).resolve()),
            "job": config.job_record(file_sha256(spec.teacher)), "sources": sorted(i.source for i in items)}


def read_labels_record(path: Path) -> dict[str, Any] | None:
    """The record stored in a labels file's Parquet metadata (None when unreadable or absent)."""
    import pyarrow.parquet as pq  # lazy: Parquet only here

    try:
        metadata = pq.read_schema(path).metadata or {}
        return json.loads(metadata[LABELS_METADATA_KEY])
    except (OSError, KeyError, ValueError):
        return None


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Why cached labels do not fit this run, in words."""
    if old.get("job", {}).get("weights_sha256") != new["job"]["weights_sha256"]:
        return "another teacher checkpoint (SHA-256 differs)"
    changed = sorted(k for k in set(old.get("job", {})) | set(new["job"]) if old["job"].get(k) != new["job"].get(k))
    if changed:
        return "other labelling options (" + ", ".join(f"{k}: {old['job'].get(k)!r} -> {new['job'].get(k)!r}"
                                                       for k in changed) + ")"
    old_sources, new_sources = set(old.get("sources", [])), set(new["sources"])
    return (f"other inputs ({len(new_sources - old_sources)} new, {len(old_sources - new_sources)} gone; the inputs "
            "already labelled are kept)")


def _discard_stale_job(job_dir: Path, job: dict[str, Any], say: Callable[[str], None]) -> None:
    """A resumable job folder made with another teacher or options is ours to remove: it is relabelled."""
    path = job_dir / JOB
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("job")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous != job:
        say(f"{job_dir}: partial teacher labels of another teacher or other options; removed, relabelling")
        shutil.rmtree(job_dir)


def label_faces(spec: TeacherLabelling, output_dir: str | os.PathLike, progress: bool = True,
                say: Callable[[str], None] = print, shard_rows: int = 2000, shard_seconds: float = 30.0
                ) -> TeacherLabels:
    """The teacher's labels of every face of ``spec.inputs``: from ``OUT/teacher_labels.parquet`` when it was made
    by the same teacher, options and inputs; else by one resumable corpus job (see the module docstring)."""
    output_dir = Path(output_dir)
    items = expand_inputs(spec.inputs)  # InputError names a missing input or bad manifest
    if not items:
        raise UserError(f"--data {' '.join(spec.inputs)}: no images or videos found")
    config = spec.batch_config()
    record = _labels_record(spec, config, items)
    cache = output_dir / LABELS_FILE
    if cache.exists():
        previous = read_labels_record(cache)
        # the teacher's path is informative only: the same file (SHA-256) moved elsewhere teaches the same
        if previous is not None and all(previous.get(k) == record[k] for k in ("job", "sources")):
            frame = pd.read_parquet(cache)
            say(f"teacher labels reused from {cache} ({len(frame)} faces, teacher SHA-256 "
                f"{record['job']['weights_sha256'][:12]}): no teacher pass")
            return TeacherLabels(frame, _class_names(frame), record, reused=True)
        say(f"{cache}: made with {_difference(previous or {'job': {}}, record)}; relabelling")
        cache.unlink()
    job_dir = output_dir / LABEL_JOB_DIR
    _discard_stale_job(job_dir, record["job"], say)
    assembler = Assembler(config, driver_predictor(config, "local"))  # loads the teacher: a bad file fails here
    try:
        class_names = list(assembler.predictor.class_names)
        columns = batch_columns(class_names, False, False, extra=CROP_COLUMNS)
        out = open_output(job_dir, record["job"], columns, [*spec.inputs, spec.teacher])
        try:
            summary = run_job(items, config, out, engine="local", progress=progress, shard_rows=shard_rows,
                              shard_seconds=shard_seconds, assembler=assembler, label="teacher")
        finally:
            out.close()
    finally:
        assembler.close()
    frame = _face_rows(job_dir, record["sources"], class_names)
    if frame.empty:
        raise UserError(f"--data {' '.join(spec.inputs)}: the teacher found no face in {len(items)} input(s)")
    _write_labels(cache, frame, record)
    say(f"teacher labelled {len(frame)} faces of {len(items)} input(s) ({summary['already_done']} already done "
        f"by an earlier run) into {cache}")
    return TeacherLabels(frame, class_names, record, reused=False, summary=summary)


def _class_names(frame: pd.DataFrame) -> list[str]:
    return [c[2:] for c in frame.columns if c.startswith("p_")]


def _face_rows(job_dir: Path, sources: Sequence[str], class_names: Sequence[str]) -> pd.DataFrame:
    """The valid face rows of the job's shards for ``sources``, in a fixed order (source, frame, face)."""
    rows = pd.read_parquet(job_dir / ROWS_DIR)
    probs = [f"p_{name}" for name in class_names]
    keep = (rows["source"].isin(set(sources)) & rows["face_id"].notna()
            & (rows["error"].fillna("") == "") & np.isfinite(rows[["valence", "arousal", *probs]]).all(axis=1))
    rows = rows.loc[keep, ["source", "kind", "frame", "face_id", "crop_x0", "crop_y0", "crop_side", "valence",
                           "arousal", *probs]]
    rows = rows.assign(frame=rows["frame"].fillna(0).astype("int64"))
    return rows.sort_values(["source", "frame", "face_id"], kind="stable").reset_index(drop=True)


def _write_labels(path: Path, frame: pd.DataFrame, record: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           LABELS_METADATA_KEY: json.dumps(record).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# -- 2. crops ---------------------------------------------------------------------------------------------

def _region(row: Any, size: int) -> CropRegion | None:
    if pd.isna(row.crop_side):
        return None  # no detector: the teacher saw the whole image
    return CropRegion(int(row.crop_x0), int(row.crop_y0), int(row.crop_side), size)


def _cut(rgb: np.ndarray, region: CropRegion | None, size: int) -> np.ndarray:
    if region is None:
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    return crop_region_image(rgb, region)


def _video_crops(source: str, rows: pd.DataFrame, size: int, out: np.ndarray) -> None:
    """The crops of one video's face rows, decoding the video once in frame order."""
    wanted: dict[int, list[tuple[int, Any]]] = {}
    for position, row in zip(rows.index, rows.itertuples()):
        wanted.setdefault(int(row.frame), []).append((position, row))
    video = open_source(source)
    try:
        for frame in video:
            for position, row in wanted.pop(frame.index, []):
                out[position] = _cut(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB), _region(row, size), size)
            if not wanted:
                break
    finally:
        video.close()
    if wanted:
        raise UserError(f"{source}: frames {sorted(wanted)[:5]} of the teacher labels are no longer in the video; "
                        f"delete {LABELS_FILE} to relabel")


def face_crops(labels: TeacherLabels, size: int, output_dir: str | os.PathLike, progress: bool = True) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of the label rows (the squares the teacher saw), cached in
    ``OUT/crops_<size>.npy`` beside a record of the labels they belong to; returned memory-mapped."""
    from tqdm import tqdm

    path = Path(output_dir) / CROPS_PATTERN.format(size=size)
    stamp_path = path.with_suffix(".json")
    stamp = {"job": labels.record.get("job"), "sources": labels.record.get("sources"), "rows": len(labels.frame),
             "size": int(size)}
    if path.exists() and stamp_path.exists():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
                return np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            pass
    crops = np.zeros((len(labels.frame), size, size, 3), np.uint8)
    for source, rows in tqdm(labels.frame.groupby("source", sort=False), desc="crops", disable=not progress):
        if rows["kind"].iloc[0] == "video":
            _video_crops(source, rows, size, crops)
            continue
        rgb = read_image(source)
        for position, row in zip(rows.index, rows.itertuples()):
            crops[position] = _cut(rgb, _region(row, size), size)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, crops)
    with atomic_path(stamp_path) as tmp:
        Path(tmp).write_text(json.dumps(stamp), encoding="utf-8")
    return np.load(path, mmap_mode="r")


# -- ground truth -----------------------------------------------------------------------------------------

def read_truth(paths: Sequence[str | os.PathLike], class_names: Sequence[str]) -> pd.DataFrame:
    """Ground truth per input file from CSVs with ``path``, ``valence``, ``arousal`` and optionally
    ``expression``/``label`` (a class name or index): ``source`` (absolute), ``truth_valence``,
    ``truth_arousal``, ``truth_expression`` (-1: none). Relative paths start at the CSV's folder."""
    lower = [n.lower() for n in class_names]
    frames = []
    for path in map(Path, paths):
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise UserError(f"--truth {path}: cannot read the CSV ({exc})") from None
        missing = [c for c in ("path", "valence", "arousal") if c not in table.columns]
        if missing:
            raise UserError(f"--truth {path}: no {', '.join(missing)} column (columns: {', '.join(table.columns)})")
        label_column = next((c for c in ("expression", "label") if c in table.columns), None)

        def label(value: Any) -> int:
            if pd.isna(value):
                return -1
            text = str(value).strip()
            if text.lstrip("-").isdigit():
                return int(text) if int(text) < len(class_names) else -1
            return lower.index(text.lower()) if text.lower() in lower else -1

        frames.append(pd.DataFrame({
            "source": [os.path.abspath(p if os.path.isabs(p) else path.parent / p) for p in table["path"].astype(str)],
            "truth_valence": pd.to_numeric(table["valence"], errors="coerce").astype(np.float32),
            "truth_arousal": pd.to_numeric(table["arousal"], errors="coerce").astype(np.float32),
            "truth_expression": [label(v) for v in table[label_column]] if label_column else -1,
        }))
    return pd.concat(frames, ignore_index=True).drop_duplicates("source", keep="last") if frames else \
        pd.DataFrame(columns=["source", "truth_valence", "truth_arousal", "truth_expression"])


def truth_csvs(inputs: Sequence[str]) -> list[str]:
    """The ``--data`` CSV manifests that also hold ground truth (``valence`` and ``arousal`` columns)."""
    found = []
    for item in inputs:
        if str(item).lower().endswith(".csv") and Path(item).is_file():
            header = pd.read_csv(item, nrows=0).columns
            if {"path", "valence", "arousal"} <= set(header):
                found.append(str(item))
    return found


# -- 3. the student and its loss --------------------------------------------------------------------------

class DistillFaces(Dataset):
    """Face crops with the teacher's targets: ``image``, ``valence``/``arousal`` (teacher, clipped to [-1, 1]),
    ``expression`` (the teacher's top class), ``teacher_probs``, ``truth_valence``/``truth_arousal`` (NaN
    where unknown), ``truth_expression`` (-1 where unknown), ``index`` and ``path`` (the input file)."""

    def __init__(self, crops: np.ndarray, labels: TeacherLabels, rows: Sequence[int], transform: Callable,
                 truth: pd.DataFrame | None = None, source: str = "") -> None:
        self.crops, self.rows, self.transform = crops, np.asarray(rows, dtype=np.int64), transform
        frame = labels.frame.iloc[self.rows].reset_index(drop=True)
        self.paths = frame["source"].tolist()
        self.probs = labels.probabilities[self.rows]
        self.valence = frame["valence"].to_numpy(np.float32)
        self.arousal = frame["arousal"].to_numpy(np.float32)
        merged = frame[["source"]].merge(truth, on="source", how="left") if truth is not None and len(truth) else None
        n = len(frame)
        self.truth_valence = merged["truth_valence"].to_numpy(np.float32) if merged is not None else np.full(n, np.nan, np.float32)
        self.truth_arousal = merged["truth_arousal"].to_numpy(np.float32) if merged is not None else np.full(n, np.nan, np.float32)
        self.truth_expression = (merged["truth_expression"].fillna(-1).to_numpy(np.int64) if merged is not None
                                 else np.full(n, -1, np.int64))
        self.source = source

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def truth_count(self) -> int:
        return int(np.isfinite(self.truth_valence).sum())

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "image": self.transform(np.array(self.crops[self.rows[i]])),  # a copy: the cache is read-only
            "valence": float(np.clip(self.valence[i], -1, 1)), "arousal": float(np.clip(self.arousal[i], -1, 1)),
            "expression": int(self.probs[i].argmax()), "teacher_probs": torch.from_numpy(self.probs[i].copy()),
            "truth_valence": float(self.truth_valence[i]), "truth_arousal": float(self.truth_arousal[i]),
            "truth_expression": int(self.truth_expression[i]), "index": i, "path": self.paths[i],
        }


class DistillationLoss(nn.Module):
    """Student loss: ``(1 - CCC) + mse_weight * MSE`` on valence and arousal against the teacher's values,
    ``kl_weight * KL(teacher_T || student_T) * T^2`` on the expressions (:func:`distillation_kl`) and, where
    the batch holds ground truth, ``truth_weight * ((1 - CCC) on V/A + cross-entropy)`` against it.

    Without ``teacher_probs`` in the batch (the Trainer's whole-set validation loss) the KL term is left out.
    Returns ``loss`` and the unweighted terms ``valence``, ``arousal``, ``kl``, ``truth``.
    """

    def __init__(self, temperature: float = 2.0, kl_weight: float = 1.0, mse_weight: float = 1.0,
                 truth_weight: float = 0.5) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.kl_weight = float(temperature), float(kl_weight)
        self.mse_weight, self.truth_weight = float(mse_weight), float(truth_weight)

    def _va(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return regression_loss("ccc", pred, target) + self.mse_weight * regression_loss("mse", pred, target)

    def _truth(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        zero = outputs["valence"].float().sum() * 0.0
        if "truth_valence" not in batch:
            return zero
        term = zero
        for dim in ("valence", "arousal"):
            target = torch.as_tensor(batch[f"truth_{dim}"]).float().to(outputs[dim].device)
            if int(torch.isfinite(target).sum()) >= 2:  # a CCC needs two values
                term = term + regression_loss("ccc", outputs[dim], target)
        labels = torch.as_tensor(batch["truth_expression"]).long().to(outputs["expression"].device)
        if bool((labels >= 0).any()):
            term = term + F.cross_entropy(outputs["expression"].float(), labels, ignore_index=-1)
        return term

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = outputs["valence"].device
        terms = {dim: self._va(outputs[dim], torch.as_tensor(batch[dim]).to(device)) for dim in ("valence", "arousal")}
        total = terms["valence"] + terms["arousal"]
        if "teacher_probs" in batch:
            terms["kl"] = distillation_kl(outputs["expression"], batch["teacher_probs"].to(device), self.temperature)
            total = total + self.kl_weight * terms["kl"]
        terms["truth"] = self._truth(outputs, batch)
        total = total + self.truth_weight * terms["truth"]
        return {"loss": total, **{k: v.detach() for k, v in terms.items()}}


def build_student(backbone: str, class_names: Sequence[str], input_size: int, pretrained: str | None = None
                  ) -> nn.Module:
    """The student: the ``dual_head`` family (``backbone`` a torchvision or ``timm:`` name) with a softmax
    expression head over the teacher's classes; ``pretrained``: None, ``"imagenet"`` (the local cache, said
    loudly when absent) or a weights file."""
    names = list(class_names)
    try:
        model = create_model("dual_head", backbone=backbone, num_classes=len(names), input_size=int(input_size),
                             pretrained=pretrained)
    except (ValueError, TypeError) as exc:  # BackboneError names the choices
        raise UserError(f"--backbone {backbone}: {exc}") from None
    model.class_names = names  # the teacher's: saved in the checkpoint, restored by load_model
    return model


# -- the run ----------------------------------------------------------------------------------------------

@dataclass
class DistillOptions:
    """The student's side of a distillation run (the teacher's is :class:`TeacherLabelling`)."""

    backbone: str = "mobilenet_v3_large"
    input_size: int = 128
    output_dir: str = "runs/distill"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float = 2.0
    kl_weight: float = 1.0
    mse_weight: float = 1.0
    truth: tuple[str, ...] = ()
    truth_weight: float = 0.5
    val_fraction: float = 0.2
    pretrained: str | None = None
    num_workers: int = 0
    device: str = "auto"
    seed: int = 42
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    plot: bool = True
    config_overrides: dict[str, Any] = field(default_factory=dict)


def split_by_input(sources: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, validation rows): ``fraction`` of the distinct inputs held out, never fewer than one input,
    none when there are fewer than two inputs (frames of one video stay on one side)."""
    unique = sorted(set(sources))
    n_val = 0 if len(unique) < 2 or fraction <= 0 else max(1, int(round(fraction * len(unique))))
    n_val = min(n_val, len(unique) - 1)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(unique, size=n_val, replace=False).tolist()) if n_val else set()
    train = [i for i, s in enumerate(sources) if s not in held]
    val = [i for i, s in enumerate(sources) if s in held]
    return train, val


def distillation_record(spec: TeacherLabelling, labels: TeacherLabels, options: DistillOptions,
                        n_train: int, n_val: int, n_truth: int) -> dict[str, Any]:
    """The card's ``teacher`` field of a student: the teacher (name, file, SHA-256) and how it taught (JSON-ready)."""
    return {
        "name": Path(spec.teacher).stem, "path": labels.record["teacher"], "sha256": labels.record["job"]["weights_sha256"],
        "temperature": options.temperature, "kl_weight": options.kl_weight, "mse_weight": options.mse_weight,
        "truth_weight": options.truth_weight, "flip_tta": spec.flip_tta, "crop": spec.crop,
        "data": list(spec.inputs), "truth": list(options.truth), "faces": len(labels.frame),
        "train_faces": n_train, "val_faces": n_val, "faces_with_truth": n_truth,
        "inputs": len(labels.record["sources"]),
    }


def distill(spec: TeacherLabelling, options: DistillOptions, say: Callable[[str], None] = print) -> FitResult:
    """Label (or reuse the labels), cut the crops, train the student; returns the Trainer's :class:`FitResult`."""
    labels = label_faces(spec, options.output_dir, options.progress, say)
    student = build_student(options.backbone, labels.class_names, options.input_size, options.pretrained)
    crops = face_crops(labels, int(student.input_size), options.output_dir, options.progress)
    truth_files = [*options.truth, *truth_csvs(spec.inputs)]
    truth = read_truth(truth_files, labels.class_names) if truth_files else None
    train_rows, val_rows = split_by_input(labels.frame["source"].tolist(), options.val_fraction, options.seed)
    config = TrainConfig(**{
        "arch": student.arch, "image_size": int(student.input_size), "pretrained": False, "epochs": options.epochs,
        "lr": options.lr, "batch_size": options.batch_size, "output_dir": str(options.output_dir),
        "num_workers": options.num_workers, "device": options.device, "seed": options.seed,
        "resume": options.resume, "overwrite": options.overwrite, "progress": options.progress, "plot": options.plot,
        "monitor": "val_va_ccc" if val_rows else "train_loss", "crop_scale": (0.8, 1.0), "crop_ratio": (0.9, 1.1111),
        "warmup_epochs": 0.5, **options.config_overrides})
    size, norm = int(student.input_size), getattr(student, "normalization", None)
    train_tf = ImageTransform(size, norm, augment=config.augment, crop_scale=config.crop_scale,
                              crop_ratio=config.crop_ratio, hflip=config.hflip, color_jitter=config.color_jitter)
    source = str(Path(options.output_dir) / LABELS_FILE)
    train_set = DistillFaces(crops, labels, train_rows, train_tf, truth, source)
    val_set = DistillFaces(crops, labels, val_rows, ImageTransform(size, norm), truth, source) if val_rows else None
    if truth_files and not train_set.truth_count:
        say(f"ground truth ({', '.join(truth_files)}) matches none of the training faces' inputs: teacher targets only")
    say(f"student {student.arch} ({options.backbone}, {size} px): {len(train_set)} training faces, "
        f"{len(val_rows)} validation faces, {train_set.truth_count} with ground truth, temperature {options.temperature}")
    loss = DistillationLoss(options.temperature, options.kl_weight, options.mse_weight, options.truth_weight)
    # the model card of every checkpoint the Trainer saves (emonet.checkpoint.model_card reads model.card)
    student.card = {**dict(getattr(student, "card", None) or {}), "task": "distillation",
                    "dataset": ", ".join(spec.inputs), "split": f"{len(train_set)} train / {len(val_rows)} val faces",
                    "teacher": distillation_record(spec, labels, options, len(train_set), len(val_rows),
                                                   train_set.truth_count)}
    trainer = Trainer(student, train_set, val_set, config, task="multiclass", label_key="expression", loss_fn=loss)
    try:
        return trainer.fit()
    finally:
        trainer.close()

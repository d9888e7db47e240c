"""A batch job end to end: the inputs still to do -> an engine (stages 1-2) -> finish -> shards + ledger.

:func:`run_job` is the driver loop shared by both engines: it finishes scored chunks in order
(:class:`~emonet.batch.pipeline.Assembler`), gathers finished inputs into shards of about ``shard_rows`` rows
(or every ``shard_seconds``), writes them to a sink (:class:`~emonet.batch.sinks.RowSink`: the batch folder
or ``predict``'s table file), shows one bar (inputs done / total, faces/s) and returns the summary (counts,
errors, time per stage).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from tqdm import tqdm

from emonet.batch.engines import RayOptions, run_local, run_ray, shutdown_ray
from emonet.batch.inputs import InputItem
from emonet.batch.pipeline import STAGES, Assembler, BatchConfig, Finished, driver_predictor
from emonet.batch.sinks import RowSink

DEFAULT_SHARD_ROWS = 20_000
DEFAULT_SHARD_SECONDS = 60.0
MAX_LISTED_ERRORS = 100  # the summary lists this many unreadable inputs (all are in the ledger and the rows)


def _new_summary(
    items: Sequence[InputItem], todo: Sequence, out: RowSink, engine: str, ray_options: RayOptions | None
) -> dict:
    """The summary before any input is processed (counts at zero, what the ledger already holds)."""
    return {
        "engine": engine, "address": (ray_options.address if ray_options and engine == "ray" else None),
        "output_dir": str(out.folder), "inputs": len(items), "already_done": len(items) - len(todo),
        "processed": 0, "remaining": len(todo), "images": 0, "videos": 0, "unreadable_inputs": 0,
        "inputs_without_faces": 0, "frames": 0, "rows": 0, "faces": 0, "invalid_faces": 0, "errors": [],
        "seconds": 0.0, "frames_per_s": 0.0, "faces_per_s": 0.0, "stage_seconds": {},
        "first_result_s": None,  # start-up: model loading, and for Ray its start and the actors' start
        "shards_written": 0, "adopted_shards": out.adopted, "redone_lost_inputs": len(out.lost),
        # shard -> why; moved to OUT/corrupt/, its inputs redone (sinks without shards have none)
        "corrupt_shards": dict(out.corrupt),
        "interrupted": False,
    }


def _count_finished(summary: dict, finished: Finished) -> None:
    """Add one finished input to the summary's counts."""
    summary["processed"] += 1
    summary["remaining"] -= 1
    if finished.kind in ("image", "video"):
        summary[finished.kind + "s"] += 1
    if finished.error:
        summary["unreadable_inputs"] += 1
        if len(summary["errors"]) < MAX_LISTED_ERRORS:
            summary["errors"].append({"source": finished.source, "error": finished.error})
    faces = [r for r in finished.rows if r.get("face_id") is not None]
    if not finished.error and not faces:
        summary["inputs_without_faces"] += 1
    summary["frames"] += finished.frames
    summary["rows"] += len(finished.rows)
    summary["faces"] += sum(not r.get("error") for r in faces)
    summary["invalid_faces"] += sum(bool(r.get("error")) for r in faces)


class _ShardBuffer:
    """Finished inputs waiting to be written as one shard (every ``shard_rows`` rows or ``shard_seconds``)."""

    def __init__(self, out: RowSink, assembler: Assembler, shard_rows: int, shard_seconds: float) -> None:
        self.out, self.assembler = out, assembler
        self.shard_rows, self.shard_seconds = shard_rows, shard_seconds
        self.pending: list[Finished] = []
        self.last_flush = time.monotonic()

    def add(self, finished: Finished) -> None:
        self.pending.append(finished)

    def due(self) -> bool:
        """Enough rows for a shard, or the oldest pending input has waited ``shard_seconds``."""
        return (sum(len(f.rows) for f in self.pending) >= self.shard_rows
                or bool(self.pending) and time.monotonic() - self.last_flush >= self.shard_seconds)

    def flush(self) -> None:
        if self.pending:
            # taken off the list first: an interrupt inside write_shard must not make the interrupt handler's
            # flush write the same inputs again (their rows would be in two shards)
            finished = [(f.source, f.kind, f.error, f.rows) for f in self.pending]
            self.pending.clear()
            t0 = time.perf_counter()
            self.out.write_shard(finished)
            self.assembler.seconds["write"] += time.perf_counter() - t0
        self.last_flush = time.monotonic()


def _close_summary(summary: dict, seconds: float, assembler: Assembler, out: RowSink) -> None:
    """Rates, time per stage and shard count into the summary, then summary.json (also after an interrupt)."""
    summary["seconds"] = round(seconds, 3)
    summary["frames_per_s"] = round(summary["frames"] / seconds, 3) if seconds > 0 else 0.0
    summary["faces_per_s"] = round(summary["faces"] / seconds, 3) if seconds > 0 else 0.0
    summary["stage_seconds"] = {s: round(assembler.seconds.get(s, 0.0), 3) for s in STAGES}
    summary["shards_written"] = out.shards_written
    out.write_summary(summary)


def run_job(
    items: Sequence[InputItem], config: BatchConfig, out: RowSink, engine: str = "local",
    ray_options: RayOptions | None = None, progress: bool = True, shard_rows: int = DEFAULT_SHARD_ROWS,
    shard_seconds: float = DEFAULT_SHARD_SECONDS, assembler: Assembler | None = None, verbose: bool = False,
    label: str = "batch",
) -> dict:
    """Process the inputs of ``items`` that ``out`` has not finished; returns the summary dict.

    Ctrl-C / SIGTERM: the inputs finished so far are written (one last shard) and the summary says
    ``interrupted``; then the interrupt is re-raised. A rerun resumes with the inputs not in the ledger.
    ``label`` names the progress bar (the command that runs the job).
    """
    todo = [(i, item) for i, item in enumerate(items) if item.source not in out.done]
    owns_assembler = assembler is None  # one given by the caller is closed by the caller
    assembler = assembler or Assembler(config, driver_predictor(config, engine))
    summary = _new_summary(items, todo, out, engine, ray_options)
    shards = _ShardBuffer(out, assembler, shard_rows, shard_seconds)
    start = time.perf_counter()
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="input", desc=label,
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    chunks = None
    try:
        if engine == "local":
            chunks = run_local(todo, config, assembler.predictor)
        else:
            chunks = run_ray(todo, config, ray_options or RayOptions(), verbose)
        for chunk in chunks:
            if summary["first_result_s"] is None:
                summary["first_result_s"] = round(time.perf_counter() - start, 3)
            for finished in assembler.add(chunk):
                _count_finished(summary, finished)
                shards.add(finished)
                bar.update(1)
            elapsed = time.perf_counter() - start
            if progress and elapsed > 0:
                bar.set_postfix_str(f"{summary['faces'] / elapsed:.1f} faces/s", refresh=False)
            if shards.due():
                shards.flush()
        shards.flush()
    except KeyboardInterrupt:
        summary["interrupted"] = True
        shards.flush()  # what is finished is kept: the rerun starts after it
        raise
    finally:
        if chunks is not None:
            chunks.close()  # stops the locate thread or the Ray pipeline
        if engine == "ray":
            shutdown_ray()
        bar.close()
        _close_summary(summary, time.perf_counter() - start, assembler, out)
        if owns_assembler:
            assembler.close()
    return summary


def describe_summary(summary: dict) -> str:
    """One readable paragraph of a job summary."""
    text = (f"{summary['processed']} input(s) processed ({summary['images']} image(s), {summary['videos']} "
            f"video(s), {summary['frames']} frame(s)), {summary['already_done']} already done; "
            f"{summary['faces']} face row(s), {summary['faces_per_s']:.2f} faces/s, {summary['frames_per_s']:.2f} frames/s "
            f"in {summary['seconds']:.1f} s ({summary['engine']} engine)")
    notes = []
    if summary["unreadable_inputs"]:
        notes.append(f"{summary['unreadable_inputs']} unreadable input(s) listed with their error")
    if summary["inputs_without_faces"]:
        notes.append(f"{summary['inputs_without_faces']} input(s) without a face")
    if summary["invalid_faces"]:
        notes.append(f"{summary['invalid_faces']} face(s) with an invalid (non-finite) model output")
    if summary["adopted_shards"]:
        notes.append(f"{summary['adopted_shards']} shard(s) of an interrupted run taken into the ledger")
    if summary.get("corrupt_shards"):
        notes.append(f"{len(summary['corrupt_shards'])} corrupt shard(s) moved to corrupt/, their inputs redone "
                     f"({', '.join(f'{k}: {v}' for k, v in summary['corrupt_shards'].items())})")
    if notes:
        text += "\n  " + "; ".join(notes)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary["stage_seconds"].items())
    text += f"\n  time per stage (summed over workers): {stages}"
    text += f"\n  output: {summary['output_dir']}/rows (Parquet), ledger.jsonl, summary.json"
    if summary["interrupted"]:
        text += f"\n  interrupted: {summary['remaining']} input(s) left; rerun the same command to resume"
    return text

"""Face visibility of EMOTIC person crops: the share of face-mesh landmarks that fall inside the crop.

Definition: run MediaPipe FaceMesh (``static_image_mode=True``, ``refine_landmarks=True``, one face) on the
crop; visibility = 100 * (landmarks inside the crop) / (landmarks returned). FaceMesh predicts the whole
face geometry even where the crop cuts the face, so a half-cut face scores about 50. The denominator is the
number of landmarks actually returned (478 with refined irises), never a constant, so the score never
exceeds 100. No face found -> 0. Array that cannot be read -> NaN, with the reason reported.

How the mesh is found (measured on crops of the real sample faces, see README, "Face visibility"):
1. FaceMesh on the crop zero-padded by 25% of its long side on each side. The padding lets FaceMesh's own
   detector find faces that touch or cross the crop border; landmarks falling in the padding count as
   outside.
2. If no face: :class:`emonet.faces.FaceDetector` on the padded crop, then FaceMesh (detection confidence
   0.7, stricter to reject the detector's false alarms) on a square region of about twice the detected box
   (resized to 256 px), landmarks mapped back. FaceMesh alone misses faces that are small in the crop
   (e.g. ``camera`` as a person crop) that the detector finds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emonet.crops import NativeResources, start_face_mesh
from emonet.errors import UserError
from emonet.faces import FaceDetector, crop_region, crop_region_image
from emonet.fileio import atomic_path, check_output, check_outputs, file_sha256, same_file, write_csv_atomic
from emonet.images import to_rgb_uint8
from emonet.ledger import LedgerError, append_records, read_ledger, start_ledger
from emonet.nativelogs import native_stderr_silenced

log = logging.getLogger(__name__)

VISIBILITY_COLUMN = "Face_Visibility"
ERROR_COLUMN = "Face_Visibility_Error"
PAD_FRACTION = 0.25
REGION_EXPAND = 1.1  # emonet.faces.crop_region side = 200 * (w + h) / 220 * 1.1 ~= 2x the detector box
REGION_SIZE = 256
# FaceMesh's own detection threshold on the detector region: the detector's false alarms (e.g. on a rocket)
# are often meshed at 0.5; 0.7 rejected them on the sample crops without losing the real faces.
FALLBACK_MESH_CONFIDENCE = 0.7
PARTIAL_SUFFIX = ".partial.jsonl"
PARTIAL_FORMAT = "emonet-face-visibility-partial"
TASK_CHUNK = 4  # rows per worker task: small, so an interrupt loses little and progress stays smooth


def visibility_percent(points: np.ndarray, width: int, height: int) -> float:
    """Percentage of (N, 2) pixel points inside ``[0, width] x [0, height]``; 0 for no points."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return 0.0
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width) & (points[:, 1] >= 0) & (points[:, 1] <= height)
    return 100.0 * float(inside.sum()) / float(len(points))


class FaceVisibility(NativeResources):
    """Reusable face-visibility estimator (one FaceMesh graph, one lazily created face detector).

    Create it once per process and call :meth:`visibility` on each crop (RGB uint8); MediaPipe graphs are
    expensive to build. Not thread-safe. Use as a context manager or call :meth:`close`.
    """

    _resources = ("_mesh", "_detector", "_region_mesh")

    def __init__(self, min_confidence: float = 0.5, pad_fraction: float = PAD_FRACTION,
                 detector_fallback: bool = True) -> None:
        self.min_confidence = min_confidence
        self.pad_fraction = pad_fraction
        self.detector_fallback = detector_fallback
        self._mesh = start_face_mesh(1, refine_landmarks=True, min_confidence=min_confidence)
        self._face_seen: set[int] = set()  # meshes that have processed a face (and logged about it)
        self._detector = None
        self._region_mesh = None

    def _mesh_points(self, image: np.ndarray, mesh: Any = None) -> np.ndarray | None:
        if self._mesh is None:
            raise RuntimeError("FaceVisibility is closed")
        mesh = mesh or self._mesh
        if id(mesh) in self._face_seen:
            result = mesh.process(np.ascontiguousarray(image))
        else:  # the landmark calculators log once, on the first face they see
            with native_stderr_silenced():
                result = mesh.process(np.ascontiguousarray(image))
            if result.multi_face_landmarks:
                self._face_seen.add(id(mesh))
        if not result.multi_face_landmarks:
            return None
        h, w = image.shape[:2]
        marks = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h) for p in marks], dtype=np.float64)

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """FaceMesh landmarks of the main face as (N, 2) pixels in the crop's frame (may lie outside it).

        N is what FaceMesh returned (478 with refined irises). ``None`` when no face is found.
        """
        image = to_rgb_uint8(image)
        h, w = image.shape[:2]
        pad = max(1, int(round(self.pad_fraction * max(h, w))))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        points = self._mesh_points(padded)
        if points is None and self.detector_fallback:
            points = self._mesh_from_detection(padded)
        return None if points is None else points - pad

    def _mesh_from_detection(self, image: np.ndarray) -> np.ndarray | None:
        if self._detector is None:
            self._detector = FaceDetector(model="auto", min_score=self.min_confidence, max_faces=1)
            self._region_mesh = start_face_mesh(1, refine_landmarks=True,
                                                min_confidence=max(self.min_confidence, FALLBACK_MESH_CONFIDENCE))
        faces = self._detector.detect(image)
        if not faces:
            return None
        region = crop_region(faces[0].box, size=REGION_SIZE, expand=REGION_EXPAND)
        points = self._mesh_points(crop_region_image(image, region), self._region_mesh)
        return None if points is None else region.to_image(points)

    def visibility(self, image: np.ndarray) -> float:
        """Face visibility of a crop in percent (0-100); 0 when no face is found."""
        points = self.landmarks(image)
        if points is None:
            return 0.0
        h, w = np.asarray(image).shape[:2]
        return visibility_percent(points, w, h)


# ----------------------------------------------------------------------------------------------------------
# Whole-CSV runner: parallel workers, resumable partial results, atomic output, histogram.
# ----------------------------------------------------------------------------------------------------------


@dataclass
class VisibilitySummary:
    """What a :func:`compute_face_visibility` run did."""

    input_csv: str
    output_csv: str
    rows: int
    with_face: int  # visibility > 0
    no_face: int  # visibility == 0
    unreadable: int  # NaN, reason in Face_Visibility_Error
    mean_visibility: float  # over readable rows
    resumed_rows: int  # rows taken from an earlier interrupted run
    seconds: float
    workers: int
    backup: str | None = None
    histogram: str | None = None
    errors: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"face visibility: {self.rows} rows from {self.input_csv}",
            f"  with a face: {self.with_face}, no face: {self.no_face}, unreadable: {self.unreadable}",
            f"  mean visibility (readable rows): {self.mean_visibility:.2f}%",
            f"  {self.rows - self.resumed_rows} rows measured in {self.seconds:.1f} s with "
            f"{self.workers} worker(s)"
            + (f", {self.resumed_rows} resumed from a partial run" if self.resumed_rows else ""),
            f"  output: {self.output_csv}" + (f" (original kept as {self.backup})" if self.backup else ""),
        ]
        if self.histogram:
            lines.append(f"  histogram: {self.histogram}")
        return "\n".join(lines)


_WORKER: FaceVisibility | None = None


def _init_worker(options: dict[str, Any]) -> None:
    global _WORKER
    # Ctrl-C goes to the whole process group: let the parent handle it and stop the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER = FaceVisibility(**options)


def measure_array(estimator: FaceVisibility, path: str | os.PathLike) -> tuple[float, str | None]:
    """``(visibility, None)`` for a readable crop array, ``(nan, reason)`` otherwise."""
    from emonet.data.emotic import load_npy_image  # lazy: that module imports PyTorch (slow worker start)

    try:
        image = load_npy_image(path)
    except (OSError, ValueError) as exc:
        return math.nan, str(exc)
    try:
        return estimator.visibility(image), None
    except Exception as exc:  # noqa: BLE001 - a MediaPipe failure on one crop must not stop a 20k-row run
        return math.nan, f"{path}: face mesh failed ({type(exc).__name__}: {exc})"


def _measure_chunk(tasks: list[tuple[int, str]]) -> list[tuple[int, float, str | None]]:
    assert _WORKER is not None, "worker not initialised"
    return [(row, *measure_array(_WORKER, path)) for row, path in tasks]


def partial_path_for(output_csv: str | os.PathLike) -> Path:
    """Sidecar file holding finished rows of an interrupted run for ``output_csv``."""
    return Path(str(output_csv) + PARTIAL_SUFFIX)


def _read_partial(path: Path, header: dict[str, Any], n_rows: int) -> dict[int, tuple[float, str | None]]:
    """Rows finished by an earlier run on the same input (the sidecar is an :mod:`emonet.ledger`: a torn last
    line is cut off); a sidecar of another input or settings, or a damaged one, is ignored: start over."""
    try:
        found = read_ledger(path)
    except LedgerError as exc:
        log.warning("%s; starting over", exc)
        return {}
    if found.torn_lines:
        log.info("%s: ignored the torn last line of the interrupted run", path)
    if not found.records:
        return {}
    if found.records[0] != header:
        log.warning("%s: partial results belong to another input or settings; starting over", path)
        return {}
    done: dict[int, tuple[float, str | None]] = {}
    for record in found.records[1:]:
        try:
            row = int(record["row"])
            value = record.get("visibility")
            done_value = (math.nan if value is None else float(value), record.get("error"))
        except (KeyError, TypeError, ValueError):
            continue  # not a row record: measured again
        if 0 <= row < n_rows:
            done[row] = done_value
    return done


def _backup_path(path: Path) -> Path:
    # Never overwrite an earlier backup: it may be the only copy of the user's original file.
    candidate = path.with_name(path.name + ".bak")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.bak{number}")
    return candidate


def write_histogram(values: Iterable[float], path: str | os.PathLike, title: str) -> Path:
    """Histogram PNG of visibility values (NaN ignored), 5%-wide bins, written atomically."""
    # lazy: matplotlib is slow to import and only this figure needs it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(list(values), dtype=np.float64)
    values = values[np.isfinite(values)]
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(values, bins=np.linspace(0, 100, 21), color="#4477aa", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel("Face visibility (% of face-mesh landmarks inside the crop)")
    ax.set_ylabel("Number of crops")
    ax.set_xlim(0, 100)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _worker_context(start_method: str | None) -> multiprocessing.context.BaseContext:
    """Process context for the workers.

    ``fork`` (Linux) only while this process has not imported MediaPipe: children then inherit the imported
    modules instead of re-importing torch (seconds each). Forking after MediaPipe graphs were built crashed
    the children ("malloc(): unaligned tcache chunk"), so then ``forkserver`` (a clean server forks the
    workers; emonet is preloaded once) or ``spawn``.
    """
    methods = multiprocessing.get_all_start_methods()
    if start_method is None:
        if sys.platform.startswith("linux") and "fork" in methods and "mediapipe" not in sys.modules:
            start_method = "fork"
        else:
            start_method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        context.set_forkserver_preload([__name__])
    return context


def _chunks(items: list[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(items), size):
        yield items[start: start + size]


def _check_paths(csv_path: Path, arrays_dir: Path, output_csv, in_place: bool, histogram) -> Path:
    """Before any work: one output, not the input (unless in place), writable; the inputs exist."""
    if in_place == (output_csv is not None):
        raise ValueError("give exactly one of output_csv or in_place=True")
    output = csv_path if in_place else Path(output_csv)
    if not in_place:
        if same_file(output, csv_path):
            raise UserError(f"--output {output}: is the input CSV; pass --in-place (in_place=True) to replace it")
        check_output(output, [arrays_dir, histogram], kind="file", option="--output")
    if histogram is not None:
        check_outputs({"--histogram": histogram}, [csv_path, arrays_dir, output])
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: annotation CSV not found")
    if not arrays_dir.is_dir():
        raise FileNotFoundError(f"{arrays_dir}: image array folder not found")
    return output


def read_annotations(csv_path: Path, column: str):
    """The EMOTIC CSV as text (every other cell is written back exactly as read), checked."""
    import pandas as pd  # lazy: loaded in the parent only, never in the workers

    from emonet.data.emotic import EmoticFormatError, validate_emotic_columns  # lazy: imports PyTorch

    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EmoticFormatError(f"{csv_path}: cannot parse CSV ({exc})") from None
    columns = list(frame.columns)
    if columns and columns[0].startswith("Unnamed: 0"):
        columns = columns[1:]
    validate_emotic_columns(columns, csv_path)
    if column not in frame.columns:
        raise ValueError(f"{csv_path}: no column {column!r}")
    if VISIBILITY_COLUMN in frame.columns:
        log.info("%s already has %s; recomputing it", csv_path, VISIBILITY_COLUMN)
    return frame


def _pending_tasks(names: Iterable[str], arrays_dir: Path, results: dict, csv_path: Path, column: str
                   ) -> list[tuple[int, str]]:
    """(row, array path) of the rows still to measure; an empty name is an error row at once."""
    tasks: list[tuple[int, str]] = []
    for row, name in enumerate(names):
        if row in results:
            continue
        if not name.strip():
            results[row] = (math.nan, f"{csv_path}: row {row}: empty {column}")
        else:
            tasks.append((row, str(arrays_dir / name)))
    return tasks


def start_workers(tasks: list[tuple[int, str]], options: dict[str, Any], workers: int, start_method: str | None):
    """The worker pool and its submitted tasks (``None, []`` for one worker). Called before any thread starts
    (tqdm's monitor): forking a process that runs threads can deadlock the child."""
    if not tasks or workers == 1:
        return None, []
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=_worker_context(start_method), initializer=_init_worker, initargs=(options,),
    )
    return pool, [pool.submit(_measure_chunk, chunk) for chunk in _chunks(tasks, TASK_CHUNK)]


def measure_rows(tasks: list[tuple[int, str]], options: dict[str, Any], futures: list
                 ) -> Iterator[tuple[int, float, str | None]]:
    """``(row, visibility, error)`` of every task, in completion order: from the pool's ``futures``, or measured
    in this process when there are none."""
    if not futures:
        if tasks:
            with FaceVisibility(**options) as estimator:
                for row, path in tasks:
                    yield (row, *measure_array(estimator, path))
        return
    for future in concurrent.futures.as_completed(futures):
        yield from future.result()


def compute_visibility_table(
    frame, csv_path: Path, arrays_dir: Path, partial: Path, header: dict[str, Any], column: str, *,
    workers: int, progress: bool, start_method: str | None,
) -> tuple[dict[int, tuple[float, str | None]], int]:
    """Step 1: ``row -> (visibility, error)`` for every row, resuming from and appending to the ``partial``
    ledger (one fsynced line per measured row). Returns the results and the number of rows resumed."""
    from tqdm import tqdm

    n = len(frame)
    results = _read_partial(partial, header, n)
    resumed = len(results)
    if resumed:
        log.info("resuming: %d of %d rows already measured in %s", resumed, n, partial)
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)  # the output's folder, as the final write creates it
        start_ledger(partial, header)
    tasks = _pending_tasks(frame[column], arrays_dir, results, csv_path, column)
    pool, futures = start_workers(tasks, header["options"], workers, start_method)
    try:
        with tqdm(total=n, initial=n - len(tasks), desc="face visibility", unit="crop", disable=not progress) as bar:
            for row, value, error in measure_rows(tasks, header["options"], futures):
                results[row] = (value, error)
                append_records(partial, [{"row": row, "visibility": None if math.isnan(value) else value,
                                          "error": error}])  # one fsynced line: it survives a kill
                bar.update(1)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        log.warning("stopped: %d finished rows kept in %s; run the same command again to resume", len(results), partial)
        raise
    if pool is not None:
        pool.shutdown(wait=True)
    return results, resumed


def _visibility_cells(results: dict[int, tuple[float, str | None]], n: int) -> tuple[np.ndarray, list, list[str]]:
    """Values (NaN: unreadable), the sorted (row, error) list and the error column's cells."""
    values = np.full(n, math.nan)
    errors: list[tuple[int, str]] = []
    error_cells = [""] * n
    for row, (value, error) in results.items():
        values[row] = value
        if error:
            errors.append((row, error))
            error_cells[row] = error
    errors.sort()
    for row, error in errors[:20]:
        log.warning("row %d: %s", row, error)
    if len(errors) > 20:
        log.warning("... and %d more unreadable rows (see %s)", len(errors) - 20, ERROR_COLUMN)
    return values, errors, error_cells


def write_visibility(frame, values: np.ndarray, error_cells: list[str], csv_path: Path, output: Path,
                     in_place: bool) -> str | None:
    """Step 2: the CSV with the two columns added, written atomically (in place: after a backup copy)."""
    frame[VISIBILITY_COLUMN] = ["" if math.isnan(v) else f"{v:.2f}" for v in values]
    frame[ERROR_COLUMN] = error_cells
    backup = None
    if in_place:
        backup = _backup_path(csv_path)
        shutil.copy2(csv_path, backup)
    write_csv_atomic(frame, output, mode_from=csv_path if in_place else None)
    return str(backup) if backup else None


def compute_face_visibility(
    csv_path: str | os.PathLike,
    arrays_dir: str | os.PathLike,
    output_csv: str | os.PathLike | None = None,
    *,
    in_place: bool = False,
    histogram: str | os.PathLike | None = None,
    workers: int = 1,
    column: str = "Crop_name",
    progress: bool = True,
    start_method: str | None = None,
    estimator_options: dict[str, Any] | None = None,
) -> VisibilitySummary:
    """Add ``Face_Visibility`` (and ``Face_Visibility_Error``) to an EMOTIC CSV, for the arrays in ``column``.

    Writes ``output_csv`` (a new file; the input is never touched) or, with ``in_place``, replaces
    ``csv_path`` atomically after copying it to ``<csv>.bak``. Every other cell is written back exactly as
    read. Finished rows are appended to ``<output>.partial.jsonl`` (an :mod:`emonet.ledger`) as they complete,
    so an interrupted run resumes where it stopped; the sidecar is removed on success.

    ``workers`` > 1 runs that many processes, each building its FaceMesh once. ``start_method`` (``fork``,
    ``forkserver``, ``spawn``) defaults to ``fork`` on Linux while MediaPipe is not loaded in this process,
    else ``forkserver``/``spawn`` (see :func:`_worker_context`).
    """
    started = time.perf_counter()
    csv_path, arrays_dir = Path(csv_path), Path(arrays_dir)
    output = _check_paths(csv_path, arrays_dir, output_csv, in_place, histogram)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    frame = read_annotations(csv_path, column)
    header = {"format": PARTIAL_FORMAT, "version": 1, "input_sha256": file_sha256(csv_path),
              "arrays_dir": str(arrays_dir.resolve()), "column": column, "options": dict(estimator_options or {})}
    partial = partial_path_for(output)
    results, resumed = compute_visibility_table(frame, csv_path, arrays_dir, partial, header, column,
                                                workers=workers, progress=progress, start_method=start_method)
    n = len(frame)
    values, errors, error_cells = _visibility_cells(results, n)
    backup = write_visibility(frame, values, error_cells, csv_path, output, in_place)
    readable = values[np.isfinite(values)]
    summary = VisibilitySummary(
        input_csv=str(csv_path), output_csv=str(output), rows=n, with_face=int((readable > 0).sum()),
        no_face=int((readable == 0).sum()), unreadable=int(n - readable.size),
        mean_visibility=float(readable.mean()) if readable.size else math.nan, resumed_rows=resumed,
        seconds=time.perf_counter() - started, workers=workers, backup=backup, errors=errors,
    )
    if histogram is not None:
        title = (f"Face visibility of {n} crops ({csv_path.name})\n"
                 f"{summary.no_face} without a face, {summary.unreadable} unreadable")
        summary.histogram = str(write_histogram(values, histogram, title))
    partial.unlink(missing_ok=True)  # only after the output is safely in place
    return summary

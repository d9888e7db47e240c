"""``python -m emonet batch`` on real files: sample images, two generated OpenCV clips, a corrupt image and video.

The model is a project checkpoint of the ResNet-18 dual-head at 64 pixels (random weights, saved with
``save_checkpoint``): the rows come from the same code whatever the network, and a forward costs milliseconds
instead of EmoNet's ~0.3 s per face. Cost on this machine: about 60-80 s (four batch subprocesses, one of them
on a local Ray with 2 CPUs, plus predict and video run in-process through the real entry point).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT

import emonet.checkpoint
from emonet import cli
from emonet.batch.inputs import InputError, expand_inputs
from emonet.batch.output import LEDGER, OutputError, batch_columns, open_output
from emonet.samples import write_sample_video, write_samples

RAY = importlib.util.find_spec("ray") is not None
KEY = ["source", "frame", "face_id"]
VALUES = ["valence", "arousal", "valence_raw", "arousal_raw", "score"]


# The command with Ray made unimportable (as where the optional extra [scale] is not installed).
WITHOUT_RAY = "import sys; sys.modules['ray'] = None; from emonet.cli import main; sys.exit(main())"


def run_batch(*args, ray: bool = True, timeout=300) -> subprocess.CompletedProcess:
    start = [sys.executable, "-m", "emonet"] if ray else [sys.executable, "-c", WITHOUT_RAY]
    return subprocess.run([*start, "batch", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout)


def read_rows(folder: Path) -> pd.DataFrame:
    df = pd.read_parquet(folder / "rows")
    return df.sort_values(KEY, na_position="first").reset_index(drop=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_video) -> Path:
    """images/: astronaut, grace_hopper (faces), chelsea (no face); clips/: the 16-frame two-face mp4 and an
    8-frame one-face avi; broken.jpg and clips/broken.mp4: corrupt files."""
    root = tmp_path_factory.mktemp("corpus")
    write_samples(root / "images", ("astronaut", "grace_hopper", "chelsea"))
    (root / "clips").mkdir()
    shutil.copy(sample_video, root / "clips" / "two.mp4")
    write_sample_video(root / "clips" / "one.avi", seconds=0.8, fps=10.0, size=(320, 240), faces=("grace_hopper",))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a whole JPEG")
    (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return root


@pytest.fixture(scope="module")
def local_run(corpus, small_checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("batch") / "out"
    result = run_batch(corpus, "--weights", small_checkpoint, "--output-dir", out, "--smoothing", "ema",
                       "--backend", "torch", "--format", "csv", "--no-progress", "--chunk-frames", "4", ray=False)
    assert result.returncode == 0, result.stdout + result.stderr  # the local engine needs no Ray
    assert "Traceback" not in result.stderr
    return out


# -- inputs ----------------------------------------------------------------------------------------------
def test_inputs_from_files_folders_and_manifests(tmp_path, corpus):
    (tmp_path / "lists").mkdir()
    shutil.copy(corpus / "images" / "astronaut.jpg", tmp_path / "photo_without_extension")
    shutil.copy(corpus / "clips" / "two.mp4", tmp_path / "clip.bin")
    (tmp_path / "notes.bin").write_bytes(b"neither an image nor a video")
    (tmp_path / "lists" / "a.txt").write_text("# corpus\n../photo_without_extension\n\n../clip.bin\n")
    pd.DataFrame({"file": ["../notes.bin", "../gone.jpg", str(corpus / "broken.jpg")]}).to_csv(tmp_path / "lists" / "b.csv")
    pd.DataFrame({"path": [str(corpus / "images" / "chelsea.jpg")]}).to_parquet(tmp_path / "lists" / "c.parquet")

    items = expand_inputs([corpus / "clips", tmp_path / "lists" / "a.txt", tmp_path / "lists" / "c.parquet",
                           corpus / "clips" / "one.avi"])  # named twice: kept once
    by_name = {Path(i.source).name: i.kind for i in items}
    assert by_name == {"broken.mp4": "video", "one.avi": "video", "two.mp4": "video", "photo_without_extension": "image",
                       "clip.bin": "video", "chelsea.jpg": "image"}
    assert all(os.path.isabs(i.source) for i in items)
    with pytest.raises(InputError, match="no 'path' column.*--path-column"):
        expand_inputs([tmp_path / "lists" / "b.csv"])
    kinds = {Path(i.source).name: i.kind for i in expand_inputs([tmp_path / "lists" / "b.csv"], path_column="file")}
    assert kinds == {"notes.bin": "unknown", "gone.jpg": "unknown", "broken.jpg": "image"}  # error rows later
    with pytest.raises(InputError, match="input not found: .*nothing_here"):
        expand_inputs([tmp_path / "nothing_here"])


# -- the output folder: shards, ledger, crash between them -------------------------------------------------
def test_ledger_adopts_orphan_shards_cuts_torn_lines_and_redoes_lost_shards(tmp_path):
    columns = batch_columns(["a", "b"], smoothing=False, landmarks=False)
    job = {"weights_sha256": "x", "smoothing": "none"}
    rows = lambda source, n: [{"source": source, "kind": "image", "face_id": k, "valence": 0.1 * k, "error": ""}  # noqa: E731
                              for k in range(n)]
    out = open_output(tmp_path / "out", job, columns)
    first = out.write_shard([("/a.jpg", "image", "", rows("/a.jpg", 2)), ("/b.jpg", "image", "", rows("/b.jpg", 1))])
    second = out.write_shard([("/c.jpg", "image", "", rows("/c.jpg", 1))])
    out.write_shard([("/d.jpg", "image", "", rows("/d.jpg", 3))])
    with pytest.raises(OutputError, match="another batch run is writing there"):
        open_output(tmp_path / "out", job, columns)  # the lock: one run per folder
    out.close()
    ledger = tmp_path / "out" / LEDGER
    lines = ledger.read_text().splitlines()
    assert len(lines) == 4
    # a run killed after renaming the shard of c.jpg and d.jpg but before (or while) writing their ledger lines
    ledger.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    (tmp_path / "out" / "rows" / first).unlink()  # a shard deleted by hand: its inputs are redone
    stale = tmp_path / "out" / "rows" / f".{second}.abcd1234.parquet"
    stale.write_bytes(b"half a shard")  # atomic_path's temporary of a killed run

    again = open_output(tmp_path / "out", job, columns)
    assert sorted(again.done) == ["/c.jpg", "/d.jpg"] and again.adopted == 2 and again.torn_lines == 1
    assert sorted(again.lost) == ["/a.jpg", "/b.jpg"]
    assert not stale.exists()
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]  # the torn line is gone
    assert {e["source"] for e in entries[-2:]} == {"/c.jpg", "/d.jpg"}
    again.write_shard([("/a.jpg", "image", "", rows("/a.jpg", 2)), ("/b.jpg", "image", "", rows("/b.jpg", 1))])
    again.close()
    df = pd.read_parquet(tmp_path / "out" / "rows")
    assert df.groupby("source").size().to_dict() == {"/a.jpg": 2, "/b.jpg": 1, "/c.jpg": 1, "/d.jpg": 3}
    assert list(df.columns) == columns
    with pytest.raises(OutputError, match="other options .*smoothing: 'none' before, 'ema' now"):
        open_output(tmp_path / "out", {**job, "smoothing": "ema"}, columns)


def _two_shard_folder(folder: Path) -> tuple[list[str], dict, list[str]]:
    """An output folder with a 2-input shard (a.jpg: 2 rows, b.jpg: 1) and a 1-input shard (c.jpg: 3 rows)."""
    columns = batch_columns(["a", "b"], smoothing=False, landmarks=False)
    job = {"weights_sha256": "x"}
    rows = lambda source, n: [{"source": source, "kind": "image", "face_id": k, "valence": 0.1 * k, "error": ""}  # noqa: E731
                              for k in range(n)]
    out = open_output(folder, job, columns)
    names = [out.write_shard([("/a.jpg", "image", "", rows("/a.jpg", 2)), ("/b.jpg", "image", "", rows("/b.jpg", 1))]),
             out.write_shard([("/c.jpg", "image", "", rows("/c.jpg", 3))])]
    out.close()
    return columns, job, names


def _drop_a_row(path: Path, other: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # metadata kept, one row short of the ledger


CORRUPT_SHARDS = {
    "truncated": lambda path, other: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "garbage": lambda path, other: path.write_bytes(os.urandom(path.stat().st_size)),
    "empty": lambda path, other: path.write_bytes(b""),
    "a row missing": _drop_a_row,
    "another shard's content": lambda path, other: shutil.copyfile(other, path),
}


@pytest.mark.parametrize("damage", CORRUPT_SHARDS)
def test_a_corrupt_shard_is_set_aside_and_only_its_inputs_are_redone(tmp_path, damage):
    from emonet.batch.job import _new_summary, describe_summary

    columns, job, (first, second) = _two_shard_folder(tmp_path / "out")
    rows_dir = tmp_path / "out" / "rows"
    CORRUPT_SHARDS[damage](rows_dir / first, rows_dir / second)
    again = open_output(tmp_path / "out", job, columns)
    assert sorted(again.lost) == ["/a.jpg", "/b.jpg"] and list(again.done) == ["/c.jpg"]  # c's rows are kept
    assert list(again.corrupt) == [first] and (tmp_path / "out" / "corrupt" / first).exists()
    summary = _new_summary([], [], again, "local", None)
    assert summary["corrupt_shards"] == again.corrupt and summary["redone_lost_inputs"] == 2
    summary.update(seconds=1.0, stage_seconds={})
    assert f"1 corrupt shard(s) moved to corrupt/, their inputs redone ({first}: " in describe_summary(summary)
    again.close()
    assert pd.read_parquet(rows_dir).groupby("source").size().to_dict() == {"/c.jpg": 3}  # the dataset reads


JOB_FILES = {
    "not JSON": b"{not json",
    "a list": b"[]",
    "null": b"null",
    "job not an object": b'{"job": 3, "columns": []}',
    "not UTF-8": b"\xff\xfe{}",
}


@pytest.mark.parametrize("content", JOB_FILES)
def test_a_corrupt_job_record_is_refused_naming_it(tmp_path, content):
    columns, job, _ = _two_shard_folder(tmp_path / "out")
    (tmp_path / "out" / "job.json").write_bytes(JOB_FILES[content])
    with pytest.raises(OutputError, match=r"job\.json: not a (readable )?batch job record"):
        open_output(tmp_path / "out", job, columns)


def test_a_job_record_that_is_a_folder_is_refused(tmp_path):
    columns, job, _ = _two_shard_folder(tmp_path / "out")
    (tmp_path / "out" / "job.json").unlink()
    (tmp_path / "out" / "job.json").mkdir()
    with pytest.raises(OutputError, match=r"job\.json: not a readable batch job record \(IsADirectoryError\)"):
        open_output(tmp_path / "out", job, columns)


def test_ledger_helper_counts_and_cuts_a_torn_line_and_refuses_a_damaged_one(tmp_path):
    """emonet.ledger, the one resume record (batch, predict, visibility): whole lines in, a torn last line out."""
    from emonet.ledger import LedgerError, append_records, read_ledger, start_ledger

    path = tmp_path / "ledger.jsonl"
    assert read_ledger(path).records == [] and read_ledger(path).torn_lines == 0
    start_ledger(path, {"format": "test"})
    append_records(path, [{"n": 1}, {"n": 2}])
    with open(path, "ab") as handle:
        handle.write(b'{"n": 3, "ro')  # a kill inside the write of the next line
    found = read_ledger(path)
    assert found.records == [{"format": "test"}, {"n": 1}, {"n": 2}] and found.torn_lines == 1
    assert path.read_bytes().endswith(b'{"n": 2}\n')  # cut: the next append starts a whole line
    append_records(path, [{"n": 3}])
    assert [r.get("n") for r in read_ledger(path).records] == [None, 1, 2, 3] and read_ledger(path).torn_lines == 0
    path.write_bytes(b'{"n": 1}\nnot json\n{"n": 2}\n')  # damage inside the file is no interruption
    with pytest.raises(LedgerError, match="line 2 is not a ledger record"):
        read_ledger(path)


# -- the command ---------------------------------------------------------------------------------------
def checkpoint_reads(monkeypatch) -> list:
    """The paths ``emonet.checkpoint.read_checkpoint`` (the one reader of weight files) is asked for from now on."""
    reads = []
    read_checkpoint = emonet.checkpoint.read_checkpoint
    monkeypatch.setattr(emonet.checkpoint, "read_checkpoint",
                        lambda path, *args, **kwargs: reads.append(path) or read_checkpoint(path, *args, **kwargs))
    return reads


def test_rows_equal_those_of_predict_and_video(local_run, corpus, small_checkpoint, tmp_path, monkeypatch):
    rows = read_rows(local_run)
    summary = json.loads((local_run / "summary.json").read_text())
    assert summary["inputs"] == 7 and summary["processed"] == 7 and summary["unreadable_inputs"] == 2
    assert summary["images"] == 4 and summary["videos"] == 3 and summary["inputs_without_faces"] == 1  # broken ones count
    assert set(summary["stage_seconds"]) == {"decode", "detect", "model", "finish", "write"}
    assert summary["stage_seconds"]["model"] > 0 and summary["frames"] == 3 + 16 + 8

    # error rows: the corrupt image and the corrupt video, each one row naming the file and the problem
    errors = rows[rows.source.str.contains("broken")].set_index("source")["error"]
    assert len(errors) == 2
    assert all(Path(source).name in message and "cannot decode" in message for source, message in errors.items())
    assert rows.loc[rows.source.str.contains("broken"), "valence"].isna().all()

    # images: the predict command's rows (same boxes, crops, values within 1e-5); the run reads the checkpoint
    # once (one predictor shared by the locate, model and finish stages)
    reads = checkpoint_reads(monkeypatch)
    predicted = tmp_path / "predict.csv"
    assert cli.main(["predict", str(corpus / "images"), "--weights", str(small_checkpoint), "--output", str(predicted),
                     "--backend", "torch", "--no-progress"]) == 0
    assert [Path(p).resolve() for p in reads] == [small_checkpoint.resolve()]
    monkeypatch.undo()
    reference = pd.read_csv(predicted)
    images = rows[rows.source.str.startswith(str(corpus / "images"))].copy()
    assert sorted(images.source) == sorted(os.path.abspath(p) for p in reference.path)
    merged = reference.assign(source=[os.path.abspath(p) for p in reference.path]).merge(images, on="source")
    assert len(merged) == len(reference) == 3
    for column in ("valence", "arousal", "x1", "y1", "x2", "y2", "score", "p_class_0", "crop_x0", "crop_side"):
        assert np.allclose(merged[f"{column}_x"], merged[f"{column}_y"], atol=1e-5, equal_nan=True), column
    assert (merged.error_x.fillna("") == merged.error_y.fillna("")).all()  # chelsea: "no face detected"

    # videos: the video command's rows (same frames, track IDs, boxes; smoothed and raw values within 1e-5)
    for clip in ("two.mp4", "one.avi"):
        csv = tmp_path / f"{clip}.csv"
        assert cli.main(["video", "--source", str(corpus / "clips" / clip), "--weights", str(small_checkpoint),
                         "--output", str(csv), "--smoothing", "ema", "--backend", "torch", "--no-progress"]) == 0
        reference = pd.read_csv(csv).sort_values(["frame", "face_id"]).reset_index(drop=True)
        mine = rows[rows.source == str(corpus / "clips" / clip)].reset_index(drop=True)
        assert len(reference) > 0 and len(mine) == len(reference)
        assert (mine.frame.to_numpy() == reference.frame.to_numpy()).all()
        assert (mine.face_id.to_numpy() == reference.face_id.to_numpy()).all()
        assert np.allclose(mine.time_s, reference.time_s, atol=1e-4)
        assert np.allclose(mine[["x1", "y1", "x2", "y2"]], reference[["x1", "y1", "x2", "y2"]], atol=0.006)
        for column in ("valence", "arousal", "valence_raw", "arousal_raw", "p_class_3"):
            assert np.allclose(mine[column], reference[column], atol=1e-5), (clip, column)
        assert (mine.expression == reference.expression).all() and (mine.crop_x0 == reference.crop_x0).all()
    assert rows.source.str.endswith("two.mp4").sum() > rows.source.str.endswith("one.avi").sum()

    # --format csv: the same rows as one CSV
    csv_rows = pd.read_csv(local_run / "rows.csv")
    assert len(csv_rows) == len(rows) and set(csv_rows.source) == set(rows.source)


@pytest.mark.skipif(not RAY, reason="ray is not installed (pip install 'emonet-toolkit[scale]')")
def test_ray_engine_gives_the_same_rows(local_run, corpus, small_checkpoint, tmp_path):
    out = tmp_path / "ray"
    result = run_batch(corpus, "--weights", small_checkpoint, "--output-dir", out, "--smoothing", "ema", "--backend", "torch",
                       "--no-progress", "--chunk-frames", "4", "--engine", "ray")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(ray engine)" in result.stdout and "Traceback" not in result.stderr
    a, b = read_rows(local_run), read_rows(out)
    assert a.shape == b.shape and list(a.columns) == list(b.columns)
    text = [c for c in a.columns if a[c].dtype == object or str(a[c].dtype).startswith("str")]
    assert (a[text].fillna("") == b[text].fillna("")).all().all()
    numbers = a.columns.difference(text)
    assert np.allclose(a[numbers].astype(float), b[numbers].astype(float), atol=1e-5, equal_nan=True)


def _ledger_sources(out: Path) -> list[str]:
    path = out / LEDGER
    if not path.exists():
        return []
    return [json.loads(line)["source"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_killed_run_resumes_and_every_input_is_done_once(local_run, corpus, small_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "emonet", "batch", str(corpus), "--weights", str(small_checkpoint), "--output-dir",
            str(out), "--smoothing", "ema", "--backend", "torch", "--no-progress", "--chunk-frames", "4",
            "--shard-rows", "1"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        before = len(_ledger_sources(out))
        process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(_ledger_sources(out)) <= before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=120)
        done = _ledger_sources(out)
        assert before < len(done) < 7, f"the run was not stopped halfway ({len(done)} of 7 done)\n{stderr}"
        if sig == signal.SIGTERM:  # like Ctrl-C: finished inputs kept, exit 130, no traceback
            assert process.returncode == 130 and "Traceback" not in stderr, stderr
            assert "rerun the same command to resume" in stdout
        else:
            assert process.returncode == -signal.SIGKILL
    # a kill between a shard's rename and its ledger line: the shard is on disk, the ledger line is torn
    ledger = out / LEDGER
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])

    # the resuming run, in this process through the real entry point (no second start-up to pay); the local
    # engine's stages share one predictor: the checkpoint is read once
    reads = checkpoint_reads(monkeypatch)
    assert cli.main(args[3:]) == 0
    assert [Path(p).resolve() for p in reads] == [small_checkpoint.resolve()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adopted_shards"] == 1 and summary["already_done"] == len(lines)
    sources = _ledger_sources(out)
    assert len(sources) == len(set(sources)) == 7  # every input once
    resumed, clean = read_rows(out), read_rows(local_run)
    assert not resumed.duplicated(KEY).any()
    assert resumed.shape == clean.shape
    assert (resumed[KEY].fillna(-1).to_numpy() == clean[KEY].fillna(-1).to_numpy()).all()
    assert np.allclose(resumed[VALUES].astype(float), clean[VALUES].astype(float), atol=1e-5, equal_nan=True)


@contextlib.contextmanager
def unwritable_folder(folder: Path):
    """A folder nobody can write in, root included (folder modes do not stop root): immutable (chattr +i),
    else a read-only tmpfs mount. Skips when this machine allows neither."""
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        try:
            yield folder
        finally:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True).returncode == 0:
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True)
        return
    pytest.skip("cannot make an unwritable folder here (chattr +i and a read-only mount both refused)")


def test_output_folder_problems_are_clear_errors_before_any_work(corpus, small_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("emonet.batch.job.run_job", lambda *a, **k: pytest.fail("work started"))

    def batch(*args) -> str:
        assert cli.main(["batch", str(corpus / "images"), "--weights", str(small_checkpoint), *map(str, args)]) == 2
        return capsys.readouterr().err

    with unwritable_folder(tmp_path / "locked") as locked:
        err = batch("--output-dir", locked / "out")
        assert "error: --output-dir" in err and "Traceback" not in err
        assert "no permission to write in" in err or "cannot write there" in err
        assert not (locked / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.json").write_text("my own file")
    assert "is not the output of a batch job" in batch("--output-dir", tmp_path / "mine")
    assert (tmp_path / "mine" / "summary.json").read_text() == "my own file"
    assert "contains the input" in batch("--output-dir", corpus)
    assert "--address joins a Ray cluster: add --engine ray" in batch("--output-dir", tmp_path / "o", "--address", "auto")
    assert "argument --frame-stride: expected an integer >= 1" in batch("--output-dir", tmp_path / "o", "--frame-stride", "0")
    assert not (tmp_path / "o").exists()
    no_ray = run_batch(corpus / "images", "--weights", small_checkpoint, "--output-dir", tmp_path / "o", "--engine", "ray",
                       ray=False)
    assert no_ray.returncode == 2 and "--engine ray needs Ray Data" in no_ray.stderr, no_ray.stderr
    assert "pip install 'emonet-toolkit[scale]'" in no_ray.stderr and "Traceback" not in no_ray.stderr
    assert not (tmp_path / "o").exists()


def test_ray_actor_pools_follow_the_cluster_resources():
    from emonet.batch.engines import RayOptions, pool_sizes

    class Cluster:  # what ray.cluster_resources() reports; the pool sizes are plain arithmetic on it
        def __init__(self, **resources) -> None:
            self.resources = resources

        def cluster_resources(self) -> dict:
            return self.resources

    assert pool_sizes(Cluster(CPU=2.0), RayOptions()) == (1, 1, 0.0)  # this machine: 1 locate + 1 CPU model actor
    assert pool_sizes(Cluster(CPU=16.0, GPU=1.0), RayOptions()) == (15, 1, 1.0)  # one model actor per GPU
    assert pool_sizes(Cluster(CPU=16.0, GPU=1.0), RayOptions(gpus_per_model_worker=0.5)) == (14, 2, 0.5)
    assert pool_sizes(Cluster(CPU=64.0, GPU=4.0), RayOptions(locate_workers=40)) == (40, 4, 1.0)


def test_a_cpu_model_actor_uses_every_core_of_its_node(monkeypatch):
    """Ray starts an actor holding one CPU with one thread (OMP_NUM_THREADS=1): a CPU-only model actor would
    run EmoNet on one core (measured: the model stage took 2.1x as long as the local engine's on 2 cores)."""
    from emonet.batch import engines

    monkeypatch.setattr(engines, "Scorer", lambda config: None)  # the model itself is not what is tested
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # what Ray gives the actor
        engines._actor_classes(None, model_threads=0)[1]()  # CPU model actor (run_ray: no GPU per actor)
        assert torch.get_num_threads() == os.cpu_count()
        torch.set_num_threads(1)
        engines._actor_classes(None, model_threads=None)[1]()  # GPU model actor: Ray's threads are kept
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

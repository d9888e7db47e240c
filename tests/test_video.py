"""Video engine, tracker, smoothing and ``python -m emonet video`` on generated videos of real faces."""

from __future__ import annotations

import glob
import os
import signal
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_helpers import FlakyCapture, run_cli, running_until_rows, video_frames
from conftest import SAMPLE_VIDEO_SIZE, ColourModel

from emonet.classes import EMONET_8_CLASSES
from emonet.faces import FaceDetector
from emonet.predictor import Predictor
from emonet.samples import write_sample_video
from emonet.tracking import TrackSmoothers
from emonet.video import (
    CaptureSource,
    Frame,
    FrameSource,
    SourceError,
    VideoEngine,
    open_camera,
    open_source,
    process_video,
)


@pytest.fixture(scope="module")
def colour_predictor():
    predictor = Predictor(ColourModel(), device="cpu", detector=FaceDetector("auto"))
    yield predictor
    predictor.close()


def face_name(row, width=SAMPLE_VIDEO_SIZE[0]) -> str:
    """The sample video keeps the astronaut on the left half and Grace Hopper on the right half."""
    return "astronaut" if (row.x1 + row.x2) / 2 < width / 2 else "grace_hopper"


# -- the command, end to end ---------------------------------------------------------------------------
def test_video_cli_end_to_end(official_checkpoint_8, sample_video, sample_video_schedule_list, tmp_path):
    out_csv, out_video, out_plot = tmp_path / "faces.csv", tmp_path / "annotated.mp4", tmp_path / "va.png"
    summary_json = tmp_path / "summary.json"
    result = run_cli("video", "--weights", official_checkpoint_8, "--source", sample_video, "--output", out_csv,
                     "--output-video", out_video, "--plot", out_plot, "--smoothing", "ema", "--no-progress",
                     "--summary-json", summary_json, "--max-frames", 12)
    assert result.returncode == 0, result.stdout + result.stderr
    n_frames = 12  # of 16: both faces are on screen from frame 6; fewer EmoNet forwards on a small CPU
    schedule = sample_video_schedule_list[:n_frames]
    assert f"{n_frames} frame(s)" in result.stdout and "2 face ID(s)" in result.stdout

    df = pd.read_csv(out_csv)
    base = ["frame", "time_s", "shot", "face_id", "x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    assert list(df.columns[:12]) == base
    assert (df["shot"] == 0).all()  # one shot: faces appearing are no cut
    assert list(df.columns[12:20]) == [f"p_{c}" for c in EMONET_8_CLASSES]
    assert list(df.columns[20:]) == ["valence_raw", "arousal_raw", "crop_x0", "crop_y0", "crop_side", "crop_method",
                                     "error"]
    assert df["error"].isna().all()  # every face had a valid (finite) prediction
    assert set(df["crop_method"]) <= {"mesh", "detector"} and (df["crop_method"] == "mesh").mean() > 0.5
    # one row per visible face per frame; no row at all for the face-free frames
    expected = {i: len(faces) for i, faces in enumerate(schedule) if faces}
    assert df.groupby("frame").size().to_dict() == expected
    assert sum(len(f) == 2 for f in schedule) >= 4
    assert not schedule[0] and 0 not in set(df["frame"])
    assert np.allclose(df["time_s"], df["frame"] / 10.0)
    # one stable ID per person through the clip
    df["person"] = [face_name(r) for r in df.itertuples()]
    ids = df.groupby("person")["face_id"].unique()
    assert len(ids["astronaut"]) == 1 and len(ids["grace_hopper"]) == 1
    assert ids["astronaut"][0] != ids["grace_hopper"][0]
    assert df[["valence", "arousal", "valence_raw", "arousal_raw"]].abs().le(1).all().all()
    assert np.allclose(df[[f"p_{c}" for c in EMONET_8_CLASSES]].sum(axis=1), 1.0, atol=1e-4)
    # EMA smoothing: a track's first value is the raw one; later ones are pulled towards the history
    for _, track in df.groupby("face_id"):
        assert np.isclose(track["valence"].iloc[0], track["valence_raw"].iloc[0], atol=1e-6)
    assert (df["valence"] - df["valence_raw"]).abs().max() > 0

    # the annotated video: right size and frame count, by metadata and by reading it
    cap = cv2.VideoCapture(str(out_video))
    assert cap.isOpened()
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n_frames
    cap.release()
    frames = video_frames(out_video)
    assert len(frames) == n_frames
    assert all(frame.shape == (SAMPLE_VIDEO_SIZE[1], SAMPLE_VIDEO_SIZE[0], 3) for frame in frames)
    plot = cv2.imread(str(out_plot))
    assert plot is not None and plot.shape[0] > 200
    assert '"tracks": 2' in summary_json.read_text()


# -- smoothing (the tracker and per-track smoothing: tests/test_tracking.py) ---------------------------
def test_no_smoothing_is_identity():
    smoothers = TrackSmoothers("none")
    assert not smoothers.enabled
    assert np.allclose(smoothers(1, np.array([0.25, -0.5]), 0.0), [0.25, -0.5])
    with pytest.raises(ValueError, match="unknown smoothing"):
        TrackSmoothers("kalman")


# -- engine: detection every N frames, image folders, interruption, disconnection ----------------------
def test_detect_every_n_tracks_in_between(colour_predictor, sample_video, sample_video_schedule_list, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(video_frames(sample_video)):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), frame)
    source = open_source(folder, fps=10, as_sequence=True)  # the frames of one clip: tracked across images
    assert source.frame_count == len(sample_video_schedule_list)
    engine = VideoEngine(colour_predictor, detect_every=4, smoothing="one-euro")
    summary = process_video(engine, source, csv_path=tmp_path / "out.csv", progress=False)
    df = pd.read_csv(tmp_path / "out.csv")
    assert summary.frames == len(sample_video_schedule_list)
    assert summary.detections_run < summary.frames  # the detector skipped frames
    assert {0, 1} & set(df["frame"]) == set()
    assert set(df["detected"]) == {0, 1}
    # boxes are carried between detections: the astronaut has a row on every frame once found
    df["person"] = [face_name(r) for r in df.itertuples()]
    astro = df[df.person == "astronaut"]
    first = astro["frame"].min()
    expected_frames = [i for i, s in enumerate(sample_video_schedule_list) if "astronaut" in s and i >= first]
    assert astro["frame"].tolist() == expected_frames
    assert astro["face_id"].nunique() == 1 and df["face_id"].nunique() == 2
    # on detection frames every visible face is there
    for frame, group in df[df.detected == 1].groupby("frame"):
        assert len(group) == len(sample_video_schedule_list[frame])


class ListSource(FrameSource):
    """Frames from a list; raises KeyboardInterrupt after ``interrupt_after`` frames (simulated Ctrl-C)."""

    def __init__(self, frames, interrupt_after=None):
        self.frames, self.interrupt_after = frames, interrupt_after
        self.description, self.fps, self.frame_count = "list", 10.0, len(frames)

    def __iter__(self):
        for i, image in enumerate(self.frames):
            if self.interrupt_after is not None and i == self.interrupt_after:
                raise KeyboardInterrupt
            yield Frame(i, i / self.fps, image)


def read_frames(path, n):
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    return frames


def test_ctrl_c_keeps_outputs(colour_predictor, sample_video, tmp_path):
    frames = read_frames(sample_video, 8)
    engine = VideoEngine(colour_predictor)
    summary = process_video(engine, ListSource(frames, interrupt_after=5), csv_path=tmp_path / "out.csv",
                            output_video=tmp_path / "out.avi", progress=False)
    assert summary.interrupted and summary.frames == 5
    df = pd.read_csv(tmp_path / "out.csv")
    assert df["frame"].max() == 4
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_camera_disconnect_ends_cleanly(colour_predictor, sample_video, tmp_path):
    frames = read_frames(sample_video, 6)
    capture = FlakyCapture(frames[1:])
    source = CaptureSource(capture, frames[0], "camera 0", live=True, retries=3, retry_delay=0.0)
    with pytest.warns(UserWarning, match="camera 0: read failed"):
        summary = process_video(VideoEngine(colour_predictor), source, csv_path=tmp_path / "out.csv", progress=False)
    source.close()
    assert summary.disconnected and summary.frames == 6 and "disconnected" in str(summary)
    assert capture.reads == 5 + 1 + 3 and capture.released
    assert pd.read_csv(tmp_path / "out.csv")["frame"].max() == 5


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """200 frames (20 s at 10 fps, 320x240) of the sample faces: a run that is still going when a test
    interrupts it after its first rows."""
    return write_sample_video(tmp_path_factory.mktemp("long") / "long.avi", seconds=20, fps=10, size=(320, 240))


# The interrupt tests run the small dual-head checkpoint: what they check (rows flushed per frame, a clean
# stop) does not depend on the network, and an EmoNet forward costs ~0.3 s per face.
def test_interrupted_cli_run_keeps_its_csv(small_checkpoint, long_video, tmp_path):
    out_csv = tmp_path / "frames.csv"
    out_csv.write_text("an earlier run's table\n")
    partial = tmp_path / "frames.csv.partial"
    argv = ["-m", "emonet", "video", "--weights", small_checkpoint, "--source", long_video, "--output", out_csv,
            "--backend", "torch", "--no-progress"]
    with running_until_rows(argv, partial, rows=4) as proc:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: only per-frame flushing saves the rows
        proc.communicate(timeout=30)
    assert out_csv.read_text() == "an earlier run's table\n"  # a killed run never costs the earlier output
    df = pd.read_csv(partial)
    assert len(df) >= 3
    assert df["frame"].is_monotonic_increasing and df["valence"].between(-1, 1).all()
    assert df[[c for c in df.columns if c.startswith("p_")]].notna().all().all()


# -- bad sources and outputs ---------------------------------------------------------------------------
def test_bad_sources_error_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="video source not found: .*missing.mp4"):
        open_source(tmp_path / "missing.mp4")
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="fake.mp4: cannot decode video"):
        open_source(fake)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(tmp_path / "empty")
    if glob.glob("/dev/video*"):
        pytest.skip("this machine has cameras: the unopenable-camera check needs indices that do not exist")
    with pytest.raises(SourceError, match=r"tried index 7\)"):
        open_source("7")
    with pytest.raises(SourceError, match=r"tried index 5, 6\)"):
        open_camera([5, 6], retries=0)


def test_cli_bad_source_output_and_weights(official_checkpoint_8, sample_video, tmp_path, capsys):
    from emonet.cli import main

    # in-process: these fail before any model is loaded, a subprocess would only add start-up time
    assert main(["video", "--weights", str(official_checkpoint_8), "--source", str(tmp_path / "nope.mp4"),
                 "--output", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "video source not found" in err and "nope.mp4" in err
    assert not (tmp_path / "x.csv").exists()
    assert main(["video", "--weights", str(official_checkpoint_8), "--source", str(sample_video),
                 "--output", str(tmp_path / "x.csv"), "--output-video", str(tmp_path / "x.mkv")]) == 2
    assert "x.mkv: unsupported extension" in capsys.readouterr().err
    assert main(["video", "--weights", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "weights not found" in err and "missing.pth" in err and "download" not in err  # not an official name
    assert main(["video", "--weights", str(official_checkpoint_8), "--source", str(sample_video),
                 "--output", str(tmp_path / "x.csv"), "--batch-frames", "0"]) == 2
    assert "argument --batch-frames: expected an integer >= 1, got '0'" in capsys.readouterr().err
    # the old --csv spelling still works for one release, with a deprecation warning
    assert main(["video", "--weights", str(tmp_path / "missing.pth"), "--csv", str(tmp_path / "x.csv")]) == 2
    assert "--csv is deprecated" in capsys.readouterr().err
    # an output that is the source clip is refused before anything is read or written
    before = sample_video.read_bytes()
    assert main(["video", "--weights", str(official_checkpoint_8), "--source", str(sample_video),
                 "--output", str(tmp_path / "y.csv"), "--output-video", str(sample_video)]) == 2
    assert "is also an input" in capsys.readouterr().err and sample_video.read_bytes() == before
    assert not (tmp_path / "y.csv").exists()


def test_sample_video_codecs(tmp_path):
    for name in ("s.mp4", "s.avi"):
        path = write_sample_video(tmp_path / name, seconds=0.5, fps=10, size=(160, 120))
        cap = cv2.VideoCapture(str(path))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
        ok, frame = cap.read()
        assert ok and frame.shape == (120, 160, 3)
    with pytest.raises(ValueError, match="unsupported video extension"):
        write_sample_video(tmp_path / "s.mkv")
    assert os.path.getsize(tmp_path / "s.avi") > 0


# -- image folders: independent photos (new tracks per image) or the frames of one clip ---------------------
@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, sample_images_dir):
    import shutil

    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(sample_images_dir / "astronaut.jpg", folder / "0_astronaut.jpg")
    shutil.copy(sample_images_dir / "astronaut.jpg", folder / "1_astronaut_again.jpg")  # the same face, same place
    shutil.copy(sample_images_dir / "grace_hopper.jpg", folder / "2_grace_hopper.jpg")
    (folder / "3_corrupt.jpg").write_bytes(b"not an image")
    return folder


def test_folder_images_are_independent_unless_a_sequence(colour_predictor, photo_folder, tmp_path):
    names = ["0_astronaut.jpg", "1_astronaut_again.jpg", "2_grace_hopper.jpg", "3_corrupt.jpg"]
    frames = list(open_source(photo_folder))
    assert [f.path.name for f in frames] == names and all(f.new_scene for f in frames)
    engine = VideoEngine(colour_predictor, smoothing="one-euro")
    process_video(engine, open_source(photo_folder), csv_path=tmp_path / "photos.csv", progress=False)
    df = pd.read_csv(tmp_path / "photos.csv")
    assert list(df.columns[:3]) == ["frame", "image", "time_s"]
    assert df["image"].map(lambda p: p.split("/")[-1]).tolist() == names
    faces = df[df["error"].isna()]
    assert len(faces) == 3 and faces["face_id"].nunique() == 3  # even the same face in the same place
    assert (faces["valence"] == faces["valence_raw"]).all()  # no smoothing history carried over
    assert "cannot decode" in df.iloc[3]["error"]

    source = open_source(photo_folder, as_sequence=True)
    assert not any(f.new_scene for f in source)
    engine = VideoEngine(colour_predictor, smoothing="none")
    process_video(engine, open_source(photo_folder, as_sequence=True), csv_path=tmp_path / "clip.csv", progress=False)
    clip = pd.read_csv(tmp_path / "clip.csv")
    assert clip.loc[0, "face_id"] == clip.loc[1, "face_id"]  # tracked from one frame to the next


def test_video_cli_image_folder(official_checkpoint_8, photo_folder, tmp_path, capsys):
    out = tmp_path / "out.csv"
    result = run_cli("video", "--weights", official_checkpoint_8, "--source", photo_folder, "--output", out,
                     "--smoothing", "none", "--no-progress", "--max-frames", 2, "--no-overlap", "--batch-frames", 2)
    assert result.returncode == 0, result.stdout + result.stderr
    df = pd.read_csv(out)
    assert df["image"].map(lambda p: p.split("/")[-1]).tolist() == ["0_astronaut.jpg", "1_astronaut_again.jpg"]
    assert df["face_id"].tolist() == [1, 2]
    # --as-sequence (tracking across the images) is covered at the engine level above; the flag exists
    from emonet.cli import main

    assert main(["video", "--help"]) == 0 and "--as-sequence" in capsys.readouterr().out


# -- pipeline: decode + locate overlap the model (files), batching, live sources, errors, interrupts ---------
class RecordingSource(FrameSource):
    """Frames from a list, recording which thread reads them, how many frames were finished when each was
    read, and which thread ran its cleanup. ``fail_at``: index whose read raises ``fail_with``."""

    def __init__(self, frames, live=False, fail_at=None, fail_with=None):
        self.frames, self.live, self.fail_at, self.fail_with = frames, live, fail_at, fail_with
        self.description, self.fps, self.frame_count = "recording", 10.0, len(frames)
        self.threads, self.done_at_read, self.cleanup_thread, self.emitted = set(), [], None, 0

    def __iter__(self):
        try:
            for i, image in enumerate(self.frames):
                if i == self.fail_at:
                    raise self.fail_with
                self.threads.add(threading.current_thread().name)
                self.done_at_read.append(self.emitted)
                yield Frame(i, i / self.fps, image)
        finally:
            self.cleanup_thread = threading.current_thread().name

    def count(self, frame, results, canvas):  # on_frame callback: a frame is finished
        self.emitted += 1


def locate_threads():
    return [t for t in threading.enumerate() if t.name == "emonet-video-locate"]


def test_files_overlap_live_sources_do_not(colour_predictor, sample_video, tmp_path):
    frames = read_frames(sample_video, 10)
    live = RecordingSource(frames, live=True)
    summary = process_video(VideoEngine(colour_predictor), live, csv_path=tmp_path / "live.csv", progress=False,
                            on_frame=live.count)
    assert summary.frames == 10 and live.threads == {threading.main_thread().name}
    # live: a frame is read only once the previous one is finished (no queue, no added latency)
    assert live.done_at_read == list(range(10))
    file = RecordingSource(frames)
    summary = process_video(VideoEngine(colour_predictor), file, csv_path=tmp_path / "file.csv", progress=False,
                            on_frame=file.count)
    assert summary.frames == 10 and live.threads.isdisjoint(file.threads)  # read (and located) in the background
    assert file.cleanup_thread in file.threads and not locate_threads()
    assert (tmp_path / "live.csv").read_bytes() == (tmp_path / "file.csv").read_bytes()


def test_overlap_and_batching_keep_the_rows(official_checkpoint_8, sample_video, tmp_path):
    """EmoNet (generated checkpoint) on a real mp4: the same CSV rows without overlap, with overlap, and with
    the faces of 4 consecutive frames in one forward (up to float rounding between batch sizes)."""
    predictor = Predictor(official_checkpoint_8, device="cpu", backend="torch", landmarks=True)
    runs = {}
    try:
        for name, overlap, batch in (("plain", False, 1), ("overlap", True, 1), ("batched", True, 4)):
            source = open_source(sample_video)
            engine = VideoEngine(predictor, smoothing="ema")
            summary = process_video(engine, source, csv_path=tmp_path / f"{name}.csv", max_frames=8, landmarks=True,
                                    progress=False, overlap=overlap, batch_frames=batch)
            source.close()
            assert summary.frames == 8 and summary.faces >= 7, (name, summary)
            runs[name] = tmp_path / f"{name}.csv"
    finally:
        predictor.close()
    assert runs["plain"].read_bytes() == runs["overlap"].read_bytes()
    plain, batched = pd.read_csv(runs["plain"]), pd.read_csv(runs["batched"])
    assert list(plain.columns) == list(batched.columns) and len(plain) == len(batched)
    numeric = plain.select_dtypes("number").columns
    exact = ["frame", "face_id", "x1", "y1", "x2", "y2", "crop_x0", "crop_y0", "crop_side"]
    assert plain[exact].equals(batched[exact])
    assert np.allclose(plain[numeric], batched[numeric], atol=1e-4, equal_nan=True)
    assert (plain["crop_method"] == batched["crop_method"]).all()


@pytest.mark.parametrize("where", ["source", "locate"])
def test_error_in_the_background_reaches_the_caller(colour_predictor, sample_video, tmp_path, where):
    frames = read_frames(sample_video, 8)
    if where == "source":
        source = RecordingSource(frames, fail_at=5, fail_with=SourceError("recording: frame 5: decoder lost sync"))
        expected, match = SourceError, "frame 5: decoder lost sync"
    else:  # a frame the locate stage cannot convert (an empty image)
        frames[5] = np.zeros((0, 0, 3), np.uint8)
        source, expected, match = RecordingSource(frames), cv2.error, r"!_src\.empty\(\)"
    with pytest.raises(expected, match=match):
        process_video(VideoEngine(colour_predictor), source, csv_path=tmp_path / "out.csv", progress=False,
                      batch_frames=2)
    assert threading.main_thread().name not in source.threads and not locate_threads()
    df = pd.read_csv(tmp_path / "out.csv")  # closed, with the rows of every frame before the failing one
    assert df["frame"].max() == 4 and df["frame"].min() == 2  # frames 0-1 of the sample have no face


def test_interrupt_in_the_main_thread_stops_the_background(colour_predictor, sample_video, tmp_path):
    source = RecordingSource(read_frames(sample_video, 12))

    def interrupt(frame, results, canvas):  # Ctrl-C (or SIGTERM, see emonet.cli) while frame 4 is written
        if frame.index == 4:
            raise KeyboardInterrupt

    summary = process_video(VideoEngine(colour_predictor), source, csv_path=tmp_path / "out.csv",
                            output_video=tmp_path / "out.avi", progress=False, on_frame=interrupt)
    assert summary.interrupted and summary.frames == 5 and not locate_threads()
    assert source.cleanup_thread in source.threads  # the reader stopped in its own thread, before returning
    assert pd.read_csv(tmp_path / "out.csv")["frame"].max() == 4
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()


def test_sigterm_stops_a_cli_run_cleanly(small_checkpoint, long_video, tmp_path):
    out_csv = tmp_path / "out.csv"
    argv = ["-m", "emonet", "video", "--weights", small_checkpoint, "--source", long_video, "--output", out_csv,
            "--backend", "torch", "--no-progress"]
    # rows go to out.csv.partial while the run goes on; SIGTERM closes the table and renames it to out.csv
    with running_until_rows(argv, tmp_path / "out.csv.partial", rows=3) as proc:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)  # the background reader must not keep the process alive
    assert proc.returncode == 130, err
    assert "interrupted: the outputs hold the frames processed so far" in out and "Traceback" not in err
    df = pd.read_csv(out_csv)
    assert not (tmp_path / "out.csv.partial").exists()
    assert len(df) >= 2 and df["frame"].is_monotonic_increasing
    assert f"{df['frame'].max() + 1} frame(s)" in out  # the summary counts the frames the CSV holds

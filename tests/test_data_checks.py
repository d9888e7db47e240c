"""Data checks of issue 29 ("Trust by construction"): sources that would hang OpenCV, video annotations
that would give silently wrong scores, and fine-tuning splits that share images under other paths."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT

from emonet.data.fixtures import write_afew_va_fixture
from emonet.data.overlap import find_shared_images, pixel_digest
from emonet.data.video_va import FrameUnavailable, VideoLayoutError, build_video_dataset, read_affwild2_annotation
from emonet.errors import UserError
from emonet.video.sources import SourceError, open_source

# -- sources that would block OpenCV ------------------------------------------------------------------------

def test_fifo_socket_and_device_sources_are_refused_before_opencv_opens_them(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "camera.avi"))
    try:
        for path, kind in ((tmp_path / "pipe.mp4", r"a FIFO \(named pipe\)"), (tmp_path / "camera.avi", "a socket"),
                           (Path("/dev/null"), "a character device")):
            started = time.monotonic()
            with pytest.raises(SourceError, match=f"{path}: is {kind}, not a video file"):
                open_source(path)
            assert time.monotonic() - started < 5  # refused from os.stat, never waited on
    finally:
        listener.close()


def test_video_command_with_a_fifo_source_exits_2_instead_of_hanging(official_checkpoint_8, tmp_path):
    os.mkfifo(tmp_path / "clip.mp4")
    proc = subprocess.run(
        [sys.executable, "-m", "emonet", "video", "--source", str(tmp_path / "clip.mp4"), "--weights",
         str(official_checkpoint_8), "--output", str(tmp_path / "out.csv")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)  # a hang fails here, not forever
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: {tmp_path / 'clip.mp4'}: is a FIFO (named pipe)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.csv").exists()


def test_a_stream_that_never_answers_times_out_with_a_clear_error():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted: list[socket.socket] = []  # connections held open, silent: the client waits for a reply
    threading.Thread(target=lambda: accepted.extend(server.accept()[0] for _ in range(4)), daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/live.mp4"
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=rf"cannot open stream {url}: no frame within 1.5 s \(timed out"):
            open_source(url, stream_timeout_s=1.5)
        assert time.monotonic() - started < 20
    finally:
        server.close()
        for conn in accepted:
            conn.close()


# -- video annotations --------------------------------------------------------------------------------------

@pytest.fixture()
def afew(tmp_path) -> Path:
    return write_afew_va_fixture(tmp_path / "afew", n_clips=1, n_frames=3)


def _edit_afew_json(root: Path, edit) -> Path:
    path = root / "001" / "001.json"
    data = json.loads(path.read_text())
    edit(data["frames"])
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("value, message", [
    (1e12, "landmark coordinate 1e\\+12 is outside any frame"),
    (float("nan"), "landmarks must be 68 \\[x, y\\] pairs of finite numbers"),
    ("12", "landmarks must be 68 \\[x, y\\] pairs of finite numbers"),
])
def test_afew_va_absurd_landmarks_are_refused_naming_file_frame_and_value(afew, value, message):
    def edit(frames):
        frames["00001"]["landmarks"][5][0] = value
    path = _edit_afew_json(afew, edit)
    with pytest.raises(VideoLayoutError, match=f"{path}: frame 00001: {message}"):
        build_video_dataset("afew-va", afew, None)


def test_afew_va_landmarks_on_one_point_or_ragged_are_refused(afew):
    path = _edit_afew_json(afew, lambda frames: frames["00000"].update(landmarks=[[50.0, 60.0]] * 68))
    with pytest.raises(VideoLayoutError, match=f"{path}: frame 00000: the 68 landmarks span no area"):
        build_video_dataset("afew-va", afew, None)
    _edit_afew_json(afew, lambda frames: frames["00000"].update(landmarks=[[50.0, 60.0]] * 67 + [[1.0]]))
    with pytest.raises(VideoLayoutError, match="frame 00000: landmarks must be 68"):
        build_video_dataset("afew-va", afew, None)


def test_afew_va_landmarks_outside_the_frame_make_an_error_row_not_a_black_crop(afew):
    _edit_afew_json(afew, lambda frames: frames["00002"].update(
        landmarks=(np.asarray(frames["00002"]["landmarks"]) + 5000).tolist()))
    dataset = build_video_dataset("afew-va", afew, None)
    assert dataset[0]["image"].shape == (256, 256, 3)
    with pytest.raises(FrameUnavailable, match="landmarks of frame 2 of 001 .* lie outside the 320x240 frame"):
        dataset[2]


def test_afew_va_frame_annotated_twice_is_refused(afew):
    path = afew / "001" / "001.json"
    text = path.read_text()
    # the same key twice in the JSON text: json.loads alone would keep the last silently
    first = text.index('"00000": ')
    entry = text[first:text.index('"00001": ')]
    doubled = text[:first] + entry + entry + text[first + len(entry):]
    path.write_text(doubled)
    with pytest.raises(VideoLayoutError, match=f"{path}: key '00000' appears twice in one object"):
        build_video_dataset("afew-va", afew, None)
    # two spellings of one frame number
    path.write_text(text)
    _edit_afew_json(afew, lambda frames: frames.update({"2": dict(frames["00002"], valence=-9)}))
    with pytest.raises(VideoLayoutError, match=f"{path}: frames '00002' and '2' are the same frame 2"):
        build_video_dataset("afew-va", afew, None)


def test_afew_va_labels_outside_minus_10_10_are_refused(afew):
    path = _edit_afew_json(afew, lambda frames: frames["00001"].update(arousal=11))
    with pytest.raises(VideoLayoutError, match=f"{path}: frame 00001: arousal 11 is outside AFEW-VA's"):
        build_video_dataset("afew-va", afew, None)


def test_affwild2_non_finite_and_out_of_range_lines_are_refused_minus_5_skipped(tmp_path):
    path = tmp_path / "video.txt"
    path.write_text("valence,arousal\n0.1,0.2\n-5,-5\n0.3,-5\n-0.4,0.5\n")
    frames, values = read_affwild2_annotation(path)
    assert frames.tolist() == [0, 3] and values.tolist() == [[0.1, 0.2], [-0.4, 0.5]]
    for line, message in (("nan,0.2", "nan,0.2 is not a pair of finite numbers"),
                          ("0.1,inf", "0.1,inf is not a pair of finite numbers"),
                          ("1.5,0.2", r"1.5,0.2 is outside \[-1, 1\] \(and not -5\)")):
        path.write_text(f"valence,arousal\n0.1,0.2\n{line}\n")
        with pytest.raises(VideoLayoutError, match=f"{path}: line 3: {message}"):
            read_affwild2_annotation(path)


def _video_csv(folder: Path, rows: list[tuple]) -> Path:
    """A per-frame CSV and its frames as numbered images (``<video>/<n>.png``; the checks never score them)."""
    face = np.full((64, 64, 3), 128, np.uint8)
    (folder / "clip").mkdir(parents=True, exist_ok=True)
    for n in range(6):
        cv2.imwrite(str(folder / "clip" / f"{n}.png"), face)
    path = folder / "frames.csv"
    pd.DataFrame(rows, columns=["video", "frame", "valence", "arousal"]).to_csv(path, index=False)
    return path


def test_video_csv_fractional_negative_and_conflicting_frames_are_refused(tmp_path):
    cases = [
        ([("clip", 0, 0.1, 0.2), ("clip", 1.5, 0.1, 0.2), ("clip", 2.5, 0.0, 0.0)],
         r"row 3: frame 1.5 is not a frame number \(a whole number >= 0\) \(2 rows in all\)"),
        ([("clip", -1, 0.1, 0.2)], "row 2: frame -1 is not a frame number"),
        ([("clip", 0, 0.1, 0.2), ("clip", 1, 0.1, 0.2), ("clip", 1, 0.7, 0.2)],
         r"frame 1 of video clip is annotated more than once with different values \(rows 3, 4; 1 frame"),
        ([("clip", 0, 1.2, 0.2)], r"row 2: valence 1.2 is outside \[-1, 1\]"),
        ([("clip", 0, 0.1, "inf")], "row 2: arousal inf is not a finite number"),
    ]
    for rows, message in cases:
        path = _video_csv(tmp_path, rows)
        with pytest.raises(VideoLayoutError, match=f"{path}: {message}"):
            build_video_dataset("video-csv", path, None)


def test_video_csv_identical_repeated_rows_are_kept_once_and_counted(tmp_path):
    path = _video_csv(tmp_path, [("clip", 0, 0.1, 0.2), ("clip", 1, 0.3, 0.4), ("clip", 1, 0.3, 0.4),
                                 ("clip", 2.0, -0.5, 0.0)])
    dataset = build_video_dataset("video-csv", path, None)
    assert dataset.frames["frame"].tolist() == [0, 1, 2]
    assert dataset.frames["valence"].tolist() == [0.1, 0.3, -0.5]
    assert dataset.summary()["dropped"] == {"duplicate_rows": 1}


# -- fine-tuning splits that share images ----------------------------------------------------------------------

def test_shared_images_are_found_by_decoded_pixels_not_paths(sample_images_dir, tmp_path):
    train = [str(sample_images_dir / f"{n}.jpg") for n in ("astronaut", "grace_hopper", "camera")]
    copy = shutil.copy(train[0], tmp_path / "renamed.jpg")  # same bytes, other path
    as_png = tmp_path / "hopper.png"  # other bytes and format, same decoded pixels
    cv2.imwrite(str(as_png), cv2.imread(train[1]))
    reencoded = tmp_path / "camera_q50.jpg"  # other pixels: not the same image
    cv2.imwrite(str(reencoded), cv2.imread(train[2]), [cv2.IMWRITE_JPEG_QUALITY, 50])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    assert pixel_digest(copy) == pixel_digest(train[0]) and pixel_digest(broken) is None
    val = [str(copy), str(as_png), str(reencoded), str(broken), str(sample_images_dir / "chelsea.jpg")]
    groups = find_shared_images({"train": train, "val": val, "test": None}, progress=False)
    assert len(groups) == 1 and groups[0].roles == ("train", "val") and groups[0].count == 2
    assert groups[0].examples == [(train[0], str(copy)), (train[1], str(as_png))]
    assert groups[0].describe().startswith("2 image(s) with the same pixels are in the train and val splits (")
    assert find_shared_images({"train": train, "val": val[2:]}, progress=False) == []


def _faces_csv(path: Path, images: list[Path]) -> Path:
    pd.DataFrame({"path": [str(p) for p in images], "label": ["happy", "neutral", "anger"][:len(images)],
                  "valence": [0.6, 0.0, -0.5][:len(images)], "arousal": [0.3, -0.1, 0.6][:len(images)]}
                 ).to_csv(path, index=False)
    return path


def test_finetune_refuses_a_validation_split_that_copies_the_training_images(
        sample_images_dir, official_checkpoint_8, tmp_path):
    from emonet.training.affect import AffectData, build_datasets, finetune_config, load_starting_model

    faces = [sample_images_dir / f"{n}.jpg" for n in ("astronaut", "grace_hopper", "camera")]
    copies = tmp_path / "copies"
    copies.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    _faces_csv(data / "train.csv", faces)
    _faces_csv(data / "val.csv", [Path(shutil.copy(f, copies / f"v_{f.name}")) for f in faces])
    args = ["--dataset", "csv", "--data-root", str(data), "--weights", str(official_checkpoint_8),
            "--arousal-range=-1,1", "--epochs", "1", "--num-workers", "0", "--device", "cpu",
            "--output-dir", str(tmp_path / "run"), "--no-progress", "--no-plot"]
    proc = subprocess.run([sys.executable, "-m", "emonet", "finetune", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    first = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert first.startswith("error: 3 image(s) with the same pixels are in the train and val splits ("
                            f"{faces[0]} = {copies / 'v_astronaut.jpg'}"), first
    assert "--allow-shared-splits" in first and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
    # with the flag, the datasets are built (the command then warns and labels the scores)
    model = load_starting_model(official_checkpoint_8)
    config = finetune_config(output_dir=str(tmp_path / "run"), progress=False)
    spec = AffectData(dataset="csv", root=str(data), arousal_range="-1,1")
    with pytest.raises(UserError, match="3 image\\(s\\) with the same pixels"):
        build_datasets(spec, model, config, progress=False)
    spec.allow_shared_splits = True
    train, val, _ = build_datasets(spec, model, config, progress=False)
    assert len(train) == len(val) == 3


def test_batch_input_fifo_without_extension_is_an_error_row_not_a_hang(tmp_path):
    import os

    from emonet.batch.inputs import _sniff

    fifo = tmp_path / "named_pipe"
    os.mkfifo(fifo)
    assert _sniff(fifo) == "unknown"  # returns at once: nothing opens the pipe

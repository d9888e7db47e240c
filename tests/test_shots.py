"""Shot boundaries (emonet.video.shots) and what the engine does at a cut, on clips made of real faces.

The clips are camera moves over the sample photos (astronaut, Grace Hopper, the photographer), so the
detector sees real pictures: a hard cut between two photos, a cut between two faces on the same set, a
fade through black, and a smooth pan of one face that must not be cut.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_cli
from conftest import ColourModel

from emonet.faces import FaceDetector
from emonet.predictor import Predictor
from emonet.samples import sample_image
from emonet.video import FrameSource, VideoEngine, open_source, process_video
from emonet.video.shots import ShotDetector

SIZE = (320, 240)  # (width, height) of the clips
CUT = 8  # the first frame of the second shot
FACE_ROWS = {"grace_hopper": 120}  # top of the camera window: where the photo's face is in view


@functools.cache
def photo_of(name: str) -> np.ndarray:
    return sample_image(name)


def camera_view(name: str, step: int, speed: float = 2.0) -> np.ndarray:
    """Frame ``step`` of a slow camera pan (``speed`` pixels of the photo per frame, from the left) over a
    sample photo: a 4:3 window around the face, resized to SIZE (RGB)."""
    photo = photo_of(name)
    h, w = photo.shape[:2]
    win_w = int(w * 0.6)
    win_h = min(h, win_w * 3 // 4)
    x0 = min(60 + int(round(speed * step)), w - win_w)
    y0 = FACE_ROWS.get(name, 0)
    return cv2.resize(photo[y0:y0 + win_h, x0:x0 + win_w], SIZE, interpolation=cv2.INTER_AREA)


def face_on_set(name: str, step: int) -> np.ndarray:
    """A face pasted on one fixed set (the coffee photo), drifting slowly: two such shots differ only in
    the person, not in the background (RGB)."""
    frame = cv2.resize(photo_of("coffee"), SIZE, interpolation=cv2.INTER_AREA)
    photo = photo_of(name)
    side = min(photo.shape[:2])
    face = cv2.resize(photo[:side, :side], (150, 150), interpolation=cv2.INTER_AREA)
    x0 = 85 + step
    frame[45:195, x0:x0 + 150] = face
    return frame


def hard_cut_clip(n: int = 2 * CUT) -> list[np.ndarray]:
    return [camera_view("astronaut", i) if i < CUT else camera_view("grace_hopper", i) for i in range(n)]


def cuts_of(frames: list[np.ndarray], detector: ShotDetector | None = None) -> list[int]:
    detector = detector or ShotDetector()
    return [i for i, frame in enumerate(frames) if detector.update(frame)]


# -- the detector ----------------------------------------------------------------------------------------
def test_hard_cut_between_two_photos_is_found_on_its_frame():
    detector = ShotDetector()
    assert cuts_of(hard_cut_clip(), detector) == [CUT]
    assert detector.shot == 1 and detector.cuts == [CUT]


def test_cut_to_another_person_on_the_same_set_is_found():
    """Only the face changes (about a third of the picture): below the absolute threshold, found by the
    adaptive rule (a sudden change against the recent frames)."""
    frames = [face_on_set("astronaut", i) if i < CUT else face_on_set("grace_hopper", i) for i in range(2 * CUT)]
    assert cuts_of(frames) == [CUT]


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_smooth_pan_of_one_face_is_no_cut(name):
    assert cuts_of([camera_view(name, i, speed=4.0) for i in range(40)]) == []


def test_fade_through_black_is_one_cut_at_the_fade_in():
    first, second = camera_view("astronaut", 0), camera_view("grace_hopper", 0)
    fade_out = [(first * (1 - k / 6)).astype(np.uint8) for k in range(7)]  # 7th frame black
    black = [np.zeros_like(first)] * 2
    fade_in = [(second * (k / 6)).astype(np.uint8) for k in range(1, 7)]
    frames = [first] * 4 + fade_out + black + fade_in + [second] * 4
    assert cuts_of(frames) == [4 + 7 + 2]  # the first frame of the fade-in (the black frames end the old shot)


def test_start_shot_reset_and_size_change():
    detector = ShotDetector()
    frame = camera_view("astronaut", 0)
    assert detector.update(frame) is False and detector.shot == 0  # the first frame is no cut
    detector.start_shot()
    assert detector.update(frame) is True and detector.shot == 1  # the same picture, marked unrelated
    assert detector.update(cv2.resize(frame, (160, 120))) is True  # another size: another shot
    detector.reset()
    detector.start_shot()  # nothing seen yet: the first frame still starts shot 0
    assert detector.update(frame) is False and detector.shot == 0 and detector.cuts == []
    with pytest.raises(ValueError, match="threshold"):
        ShotDetector(threshold=float("nan"))


# -- the engine at a cut ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def colour_predictor():
    predictor = Predictor(ColourModel(), device="cpu", detector=FaceDetector("auto"))
    yield predictor
    predictor.close()


class ClipSource(FrameSource):
    """RGB frames of a list, as a file would give them (BGR, in order)."""

    def __init__(self, frames: list[np.ndarray], live: bool = False) -> None:
        self.frames, self.live = frames, live
        self.description, self.fps, self.frame_count = "clip", 10.0, len(frames)

    def __iter__(self):
        from emonet.video import Frame

        for i, rgb in enumerate(self.frames):
            yield Frame(i, i / self.fps, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def run_engine(predictor, frames, tmp_path, smoothing="one-euro", live=False, **options) -> pd.DataFrame:
    engine = VideoEngine(predictor, smoothing=smoothing, **options)
    csv = tmp_path / "clip.csv"
    process_video(engine, ClipSource(frames, live=live), csv_path=csv, progress=False)
    return pd.read_csv(csv)


@pytest.mark.parametrize("smoothing,live", [("one-euro", False), ("ema", True)])
def test_a_cut_ends_every_track_and_every_smoother(colour_predictor, tmp_path, smoothing, live):
    df = run_engine(colour_predictor, hard_cut_clip(), tmp_path, smoothing=smoothing, live=live)
    assert df["error"].isna().all()
    assert set(df["frame"]) == set(range(2 * CUT)), "the face is found on every frame of both shots"
    assert (df["shot"] == (df["frame"] >= CUT).astype(int)).all(), "the shot column numbers the shots"
    before, after = df[df["frame"] < CUT], df[df["frame"] >= CUT]
    assert not set(before["face_id"]) & set(after["face_id"]), "no track spans the cut"
    first = after[after["frame"] == CUT].iloc[0]
    assert first["valence"] == first["valence_raw"] and first["arousal"] == first["arousal_raw"]
    later = after[after["frame"] == CUT + 3].iloc[0]
    assert later["valence"] != later["valence_raw"], "smoothing is on within the shot"


def test_no_shots_keeps_one_shot(colour_predictor, tmp_path):
    df = run_engine(colour_predictor, hard_cut_clip(), tmp_path, smoothing="ema", shots=False)
    assert (df["shot"] == 0).all()


def test_cli_numbers_shots_and_no_track_spans_the_cut(official_checkpoint_8, tmp_path):
    clip, out = tmp_path / "cut.avi", tmp_path / "faces.csv"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    for rgb in hard_cut_clip(12)[4:]:  # frames 4..11: the cut at frame 4 of the file (8 EmoNet forwards)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    result = run_cli("video", "--weights", official_checkpoint_8, "--source", clip, "--output", out,
                     "--smoothing", "one-euro", "--no-progress", "--backend", "torch")
    assert result.returncode == 0, result.stdout + result.stderr
    df = pd.read_csv(out)
    cut = CUT - 4
    assert (df["shot"] == (df["frame"] >= cut).astype(int)).all()
    assert not set(df.loc[df["frame"] < cut, "face_id"]) & set(df.loc[df["frame"] >= cut, "face_id"])
    first = df[df["frame"] == cut].iloc[0]
    assert first["valence"] == first["valence_raw"]
    assert "--no-shots" in run_cli("video", "--help").stdout


def test_image_folder_photos_are_one_shot_each(colour_predictor, tmp_path, sample_images_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["astronaut", "astronaut", "grace_hopper"]):
        (folder / f"{i}_{name}.jpg").write_bytes((sample_images_dir / f"{name}.jpg").read_bytes())
    engine = VideoEngine(colour_predictor, smoothing="none")
    process_video(engine, open_source(folder), csv_path=tmp_path / "photos.csv", progress=False)
    df = pd.read_csv(tmp_path / "photos.csv")
    assert df["shot"].tolist() == [0, 1, 2]  # unrelated photos: each starts a shot, even the same one twice


def test_without_pyscenedetect_a_run_says_how_to_install_it(monkeypatch, colour_predictor):
    """scenedetect is installed with --no-deps (its opencv-python would clash): where it is missing, the video
    package still imports, shots on stop with the pip command, --no-shots runs."""
    import sys

    from emonet.errors import UserError
    from emonet.video import shots

    monkeypatch.setitem(sys.modules, "scenedetect.common", None)  # an import of it now fails
    shots._scenedetect.cache_clear()
    try:
        with pytest.raises(UserError, match=r"pip install --no-deps scenedetect==0\.7\.2.*--no-shots"):
            VideoEngine(colour_predictor)
        assert VideoEngine(colour_predictor, shots=False).shot_detector is None
    finally:
        shots._scenedetect.cache_clear()

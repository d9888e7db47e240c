"""Video evaluation (issue 17): AFEW-VA / Aff-Wild2 / per-frame CSV readers on fixtures in the real layouts,
pooled vs per-video metrics against hand-computed values, smoothing on noisy predictions, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT

from emonet.data.fixtures import va_trajectory, write_afew_va_fixture, write_affwild2_fixture
from emonet.data.video_va import (
    FrameUnavailable,
    VideoLayoutError,
    build_video_dataset,
    parse_clip_selection,
    read_affwild2_annotation,
)
from emonet.evaluation import metrics as M
from emonet.evaluation.video import apply_smoothing, score_frames, tune_setting
from emonet.smoothing import (
    TUNING_GRID,
    SmoothingSetting,
    parse_smoothing_settings,
    smooth_sequence,
    smooth_sequence_grid,
)
from emonet.tracking import TrackSmoothers


@pytest.fixture(scope="module")
def afew_root(tmp_path_factory):
    return write_afew_va_fixture(tmp_path_factory.mktemp("afew"), n_clips=3, n_frames=4)


@pytest.fixture(scope="module")
def affwild2_root(tmp_path_factory):
    return write_affwild2_fixture(tmp_path_factory.mktemp("affwild2"), n_frames=10)


# -- readers -----------------------------------------------------------------------------------------------

def test_afew_va_reads_clips_json_and_crops_from_landmarks(afew_root, tmp_path):
    dataset = build_video_dataset("afew-va", afew_root, "2-3")
    assert dataset.videos == ["002", "003"] and len(dataset) == 8 and dataset.crop == "landmarks"
    raw = json.loads((afew_root / "002" / "002.json").read_text())["frames"]
    first = dataset.frames.iloc[0]
    assert (first["video"], first["frame"]) == ("002", 0)
    assert first["valence"] == raw["00000"]["valence"] / 10 and first["arousal"] == raw["00000"]["arousal"] / 10
    item = dataset[0]
    assert item["image"].shape == (256, 256, 3) and item["image"].dtype == np.uint8
    assert item["path"].endswith("002/00000.png") and float(item["valence"]) == pytest.approx(first["valence"])
    assert parse_clip_selection("test", {"test": (481, 600)}) == set(range(481, 601))
    assert len(build_video_dataset("afew-va", afew_root, None)) == 12

    # Broken layouts name the file and the problem.
    import shutil

    bad = tmp_path / "afew"
    shutil.copytree(afew_root, bad)
    data = json.loads((bad / "001" / "001.json").read_text())
    data["frames"]["00002"]["arousal"] = 14
    (bad / "001" / "001.json").write_text(json.dumps(data))
    with pytest.raises(VideoLayoutError, match=r"001\.json: frame 00002: arousal 14 is outside"):
        build_video_dataset("afew-va", bad, "1")
    (bad / "002" / "002.json").write_text("{not json")
    with pytest.raises(VideoLayoutError, match=r"002\.json: not a readable JSON"):
        build_video_dataset("afew-va", bad, "2")
    (bad / "003" / "003.json").unlink()
    with pytest.raises(VideoLayoutError, match=r"003\.json: annotation file missing"):
        build_video_dataset("afew-va", bad, "3")


def test_affwild2_skips_invalid_lines_and_keeps_missing_crops_as_errors(affwild2_root, tmp_path):
    ann = affwild2_root / "Annotations" / "VA_Estimation_Challenge"
    frames, values = read_affwild2_annotation(ann / "Validation_Set" / "solo_b.txt")
    lines = (ann / "Validation_Set" / "solo_b.txt").read_text().splitlines()
    # Frames 2, 3 are -5,-5; frame 5 has arousal -5: all three skipped. Line i+1 = frame i.
    assert frames.tolist() == [0, 1, 4, 6, 7, 8, 9]
    assert values[2].tolist() == [float(x) for x in lines[4 + 1].split(",")]
    dataset = build_video_dataset("affwild2", affwild2_root, "val")
    assert dataset.crop == "none" and dataset.videos == ["pair_right", "solo_b"]
    assert dataset.summary()["dropped"] == {"invalid_-5": 5} and dataset.summary()["missing_frames"] == 2
    row = dataset.frames[(dataset.frames["video"] == "solo_b") & (dataset.frames["frame"] == 4)].iloc[0]
    assert row["path"].endswith("cropped_aligned/solo_b/00005.jpg")  # 1-based crops
    missing = dataset.frames.index[(dataset.frames["video"] == "solo_b") & (dataset.frames["frame"] == 7)][0]
    with pytest.raises(FrameUnavailable, match=r"00008\.jpg: no face crop for frame 7 of solo_b"):
        dataset[int(missing)]
    assert dataset[0]["image"].shape == (112, 112, 3)

    bad = tmp_path / "bad"
    (bad / "Annotations" / "VA_Estimation_Challenge" / "Train_Set").mkdir(parents=True)
    (bad / "cropped_aligned").mkdir()
    (bad / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "v.txt").write_text("arousal,valence\n0.1,0.2\n")
    with pytest.raises(VideoLayoutError, match=r"v\.txt: line 1 must be the header 'valence,arousal'"):
        build_video_dataset("affwild2", bad, "train")
    (bad / "Annotations" / "VA_Estimation_Challenge" / "Train_Set" / "v.txt").write_text("valence,arousal\n0.1,1.7\n")
    with pytest.raises(VideoLayoutError, match=r"v\.txt: line 2: 0\.1,1\.7 is outside"):
        build_video_dataset("affwild2", bad, "train")
    with pytest.raises(VideoLayoutError, match="Validation_Set: annotation folder not found"):
        build_video_dataset("affwild2", bad, "val")


def test_affwild2_raw_videos_keep_the_left_and_right_face(affwild2_root):
    # Real MediaPipe detection on real mp4 files: pair.mp4 has a face on each side.
    for split, video, side in (("train", "pair_left", "left"), ("val", "pair_right", "right")):
        dataset = build_video_dataset("affwild2", affwild2_root, split, frames="videos")
        assert dataset.crop == "detect" and dataset.sides == {video: side}
        rows = dataset.frames.index[dataset.frames["video"] == video]
        assert len(rows) == 8
        for i in rows:
            crop = dataset.locate(int(i))
            x1, _, x2, _ = dataset.last_box
            centre = (x1 + x2) / 2
            assert crop.shape == (256, 256, 3)
            assert (centre < 320) if side == "left" else (centre > 320), (video, i, dataset.last_box)
        solo = dataset.frames.index[dataset.frames["video"] != video]
        assert all(dataset.locate(int(i)).shape == (256, 256, 3) for i in solo[:2])
        assert dataset.summary()["mesh_fallbacks"] == 0  # detect = the FaceMesh-68 crop, found on every face
        dataset.close()


def test_video_csv_with_frame_folders_and_video_files(afew_root, affwild2_root, tmp_path):
    rows = [{"video": "002", "frame": f, "valence": 0.1 * f, "arousal": -0.1 * f, "split": "test"} for f in range(4)]
    rows += [{"video": "solo_a", "frame": f, "valence": 0.2, "arousal": 0.3, "split": "test"} for f in (0, 3)]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "002").symlink_to(afew_root / "002", target_is_directory=True)
    (tmp_path / "frames" / "solo_a.mp4").symlink_to(affwild2_root / "videos" / "solo_a.mp4")
    dataset = build_video_dataset("video-csv", csv, "test", frames_root=tmp_path / "frames")
    assert dataset.crop == "detect"  # one video is a video file: its face must be found
    assert dataset.frames["source"].tolist() == ["image"] * 4 + ["video"] * 2
    assert dataset.frames["path"].iloc[2].endswith("002/00002.png")
    assert dataset.locate(5).shape == (256, 256, 3)  # frame 3 of the mp4, decoded then detected
    dataset.close()
    pd.DataFrame(rows).drop(columns="arousal").to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(VideoLayoutError, match=r"broken\.csv: missing column\(s\) arousal"):
        build_video_dataset("video-csv", tmp_path / "broken.csv", None)


# -- metrics -----------------------------------------------------------------------------------------------

def _ccc(t, p):
    t, p = np.asarray(t, float), np.asarray(p, float)
    return 2 * np.mean((t - t.mean()) * (p - p.mean())) / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)


def test_pooled_and_per_video_metrics_equal_hand_computed_values():
    videos = ["a"] * 4 + ["b"] * 3
    vt = [0.1, 0.4, -0.2, 0.5, -0.6, -0.1, 0.3]
    vp = [0.2, 0.3, -0.1, 0.2, -0.2, 0.0, 0.1]
    at = [0.5, 0.5, 0.5, 0.5, -0.3, 0.2, 0.0]  # video a: constant arousal truth
    ap = [0.4, 0.1, 0.3, 0.6, -0.1, 0.1, -0.2]
    report = M.grouped_va_report(videos, vt, vp, at, ap, n_boot=0)
    pooled, mean = report["pooled"], report["per_video_mean"]
    assert pooled["valence"]["ccc"] == pytest.approx(_ccc(vt, vp))
    assert pooled["arousal"]["ccc"] == pytest.approx(_ccc(at, ap))
    assert pooled["abaw"] == pytest.approx((_ccc(vt, vp) + _ccc(at, ap)) / 2)
    assert pooled["valence"]["rmse"] == pytest.approx(np.sqrt(np.mean((np.array(vt) - vp) ** 2)))
    assert pooled["valence"]["sagr"] == pytest.approx(6 / 7)  # 0.5 vs 0.2 ... -0.1 vs 0.0 disagree
    assert pooled["valence"]["pcc"] == pytest.approx(np.corrcoef(vt, vp)[0, 1])
    assert mean["valence"]["ccc"] == pytest.approx((_ccc(vt[:4], vp[:4]) + _ccc(vt[4:], vp[4:])) / 2)
    # Constant truth in video a: its arousal CCC is 0 (defined), its PCC undefined and left out of the mean.
    per_video = report["per_video"].set_index("video")
    assert per_video.loc["a", "arousal_ccc"] == 0.0 and np.isnan(per_video.loc["a", "arousal_pcc"])
    assert mean["arousal"]["pcc"] == pytest.approx(np.corrcoef(at[4:], ap[4:])[0, 1])
    assert mean["arousal"]["ccc"] == pytest.approx(_ccc(at[4:], ap[4:]) / 2)
    assert pooled["valence"]["ccc"] != pytest.approx(mean["valence"]["ccc"])  # pooled is not the mean
    # NaN predictions (error rows) are left out of both.
    with_error = M.grouped_va_report(videos + ["b"], vt + [0.9], vp + [np.nan], at + [0.9], ap + [np.nan], n_boot=0)
    assert with_error["pooled"]["valence"]["ccc"] == pytest.approx(pooled["valence"]["ccc"])
    assert with_error["pooled"]["valence"]["n"] == 7


def test_moments_agree_with_the_metric_functions_and_the_bootstrap_resamples_videos():
    rng = np.random.default_rng(3)
    t, p = rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)
    got = M.metrics_from_moments(M.va_moments(t, p))
    for name in M.VIDEO_METRICS:
        assert float(got[name]) == pytest.approx(getattr(M, name)(t, p), abs=1e-12)
    videos = np.repeat([f"v{k}" for k in range(10)], 30)
    truth = np.concatenate([va_trajectory(30, k)[:, 0] for k in range(10)])
    pred = truth + rng.normal(0, 0.2, truth.size)
    report = M.grouped_va_report(videos, truth, pred, truth, pred, n_boot=300, seed=1)
    lo, hi = report["pooled"]["valence"]["ccc_ci"]
    assert lo < report["pooled"]["valence"]["ccc"] < hi and hi - lo < 0.3
    lo, hi = report["per_video_mean"]["abaw_ci"]
    assert lo < report["per_video_mean"]["abaw"] < hi
    again = M.grouped_va_report(videos, truth, pred, truth, pred, n_boot=300, seed=1)
    assert again["pooled"]["abaw_ci"] == report["pooled"]["abaw_ci"]  # seeded


# -- smoothing ---------------------------------------------------------------------------------------------

def _noisy_frames(n_videos: int, n_frames: int, noise: float, seed: int, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for k in range(start, start + n_videos):
        truth = va_trajectory(n_frames, k)
        parts.append(pd.DataFrame({
            "video": f"v{k}", "frame": np.arange(n_frames), "time_s": np.arange(n_frames) / 30.0,
            "valence": truth[:, 0], "arousal": truth[:, 1],
            "pred_valence": np.clip(truth[:, 0] + rng.normal(0, noise, n_frames), -1, 1),
            "pred_arousal": np.clip(truth[:, 1] + rng.normal(0, noise, n_frames), -1, 1), "error": ""}))
    return pd.concat(parts, ignore_index=True)


def test_smoothing_raises_ccc_on_noisy_predictions_and_tuning_uses_another_split():
    report_frames = _noisy_frames(4, 150, 0.35, seed=0)
    tune_frames = _noisy_frames(4, 150, 0.35, seed=1, start=10)
    scores = {}
    for setting in parse_smoothing_settings("none,ema,one-euro,emonet5"):
        scores[setting.label] = score_frames(report_frames, apply_smoothing(report_frames, setting), n_boot=0)
    none = scores["none"]["pooled"]
    for label in ("ema", "one-euro", "emonet5"):
        smoothed = scores[label]["pooled"]
        assert smoothed["valence"]["ccc"] > none["valence"]["ccc"] + 0.03, (label, smoothed, none)
        assert smoothed["arousal"]["ccc"] > none["arousal"]["ccc"] + 0.03, (label, smoothed, none)
    # Tuned on other videos, applied unchanged: at least as good as the default parameters here.
    for kind in ("ema", "one-euro"):
        tuned, table = tune_setting(tune_frames, SmoothingSetting(kind))
        assert tuned.tuned and tuned.params and len(table) > 1
        tuned_score = score_frames(report_frames, apply_smoothing(report_frames, tuned), n_boot=0)["pooled"]["abaw"]
        assert tuned_score >= scores[kind]["pooled"]["abaw"] - 0.01
        assert tuned_score > none["abaw"] + 0.05


def test_offline_smoothing_is_the_live_smoother_and_gaps_restart_it():
    rng = np.random.default_rng(0)
    values = rng.uniform(-1, 1, (20, 2))
    frames = np.arange(20)
    for setting in parse_smoothing_settings("ema:alpha=0.3,one-euro,emonet5"):
        live = TrackSmoothers(setting.kind, **setting.kwargs)
        expected = np.stack([live(1, v, f / 30.0) for v, f in zip(values, frames)])
        np.testing.assert_allclose(smooth_sequence(values, frames / 30.0, frames, setting), expected)
    # Tuning runs every candidate in one pass: the same values as one smoother per candidate.
    for kind in ("ema", "one-euro"):
        candidates = TUNING_GRID[kind][::3]
        grid = smooth_sequence_grid(values, frames / 30.0, frames, kind, candidates)
        for c, params in enumerate(candidates):
            single = smooth_sequence(values, frames / 30.0, frames, SmoothingSetting(kind).with_params(params))
            np.testing.assert_allclose(grid[c], single, rtol=1e-12, atol=1e-12)
    gapped = np.r_[np.arange(10), np.arange(30, 40)]
    out = smooth_sequence(values, gapped / 30.0, gapped, SmoothingSetting("ema", (("alpha", 0.3),)), max_gap=10)
    assert np.allclose(out[10], values[10]) and not np.allclose(out[9], values[9])  # fresh after the gap
    holes = values.copy()
    holes[4] = np.nan  # an error row passes through and never enters the history
    out = smooth_sequence(holes, frames / 30.0, frames, SmoothingSetting("emonet"))
    assert np.isnan(out[4]).all() and np.isfinite(np.delete(out, 4, axis=0)).all()
    with pytest.raises(ValueError, match="'gamma=1' is not a parameter of ema"):
        parse_smoothing_settings("ema:gamma=1")
    with pytest.raises(ValueError, match="unknown smoothing 'kalman'"):
        parse_smoothing_settings("none,kalman")
    assert [s.label for s in parse_smoothing_settings("raw,emonet5,one-euro:beta=0.1")] == \
        ["none", "emonet5", "one-euro(beta=0.1)"]


# -- command line ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import emonet

    torch.manual_seed(0)
    return emonet.save_checkpoint(tmp_path_factory.mktemp("w") / "emonet8.pt",
                                  emonet.create_model("emonet", n_expression=8))


def test_cli_evaluates_afew_va_with_smoothing_side_by_side(tmp_path, checkpoint):
    root = write_afew_va_fixture(tmp_path / "afew", n_clips=3, n_frames=3)  # 9 forwards: keep it small
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "emonet", "evaluate", "--weights", str(checkpoint), "--dataset", "afew-va",
         "--data-root", str(root), "--split", "2-3", "--tune-on", "1", "--smoothing", "none,ema,emonet5",
         "--n-boot", "50", "--figures", "1", "--predictions-format", "parquet", "--batch-size", "8",
         "--num-workers", "0", "--device", "cpu", "--output-dir", str(out), "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "metrics.json").read_text())
    labels = [row["setting"] for row in result["settings"]]
    assert labels[0] == "none" and labels[1].startswith("ema(alpha=") and labels[2] == "emonet5"
    assert result["settings"][1]["tuned"] is True and "candidates" in result["info"]["tuning"][labels[1]]
    assert result["info"]["tune_on"] == "1" and result["info"]["dataset"]["videos"] == 2
    for label in labels:
        assert label in proc.stdout
    frames = pd.read_parquet(out / "predictions.parquet")
    assert len(frames) == 6 and set(frames["video"]) == {"002", "003"} and (frames["error"] == "").all()
    # The JSON's pooled numbers are those of the per-frame file.
    none = result["settings"][0]["pooled"]
    assert none["valence"]["rmse"] == pytest.approx(M.rmse(frames["valence"], frames["pred_valence"]))
    emonet5 = result["settings"][2]["pooled"]
    assert emonet5["arousal"]["sagr"] == pytest.approx(M.sagr(frames["arousal"], frames["pred_arousal_emonet5"]))
    assert (out / "figures" / "timelines.png").stat().st_size > 0 and (out / "figures" / "circumplex.png").is_file()
    assert len(pd.read_csv(out / "per_video.csv")) == 2 * 3


def test_cli_refuses_tuning_on_the_reported_split_and_names_bad_files(tmp_path, afew_root, checkpoint, capsys):
    from emonet.cli import main

    common = ["--weights", str(checkpoint), "--device", "cpu", "--no-progress"]
    assert main(["evaluate", *common, "--dataset", "afew-va", "--data-root", str(afew_root), "--split", "2",
                 "--tune-on", "2", "--output-dir", str(tmp_path / "o1")]) == 2
    assert "must be tuned on another split" in capsys.readouterr().err
    assert main(["evaluate", *common, "--dataset", "afew-va", "--data-root", str(afew_root), "--split", "1-2",
                 "--tune-on", "2-3", "--output-dir", str(tmp_path / "o2")]) == 2
    assert "share 1 videos (e.g. 002)" in capsys.readouterr().err
    assert main(["evaluate", *common, "--dataset", "affwild2", "--data-root", str(tmp_path),
                 "--output-dir", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Validation_Set: annotation folder not found" in err
    assert main(["evaluate", *common, "--dataset", "afew-va", "--data-root", str(afew_root), "--smoothing", "ema:alpha=3",
                 "--output-dir", str(tmp_path / "o4")]) == 2
    assert "alpha must be in (0, 1]" in capsys.readouterr().err
    assert main(["evaluate", *common, "--dataset", "afew-va", "--data-root", str(afew_root), "--cleaned",
                 "--output-dir", str(tmp_path / "o5")]) == 2
    assert "--cleaned: not used with --dataset afew-va" in capsys.readouterr().err
    assert main(["evaluate", *common, "--dataset", "csv", "--data-root", str(afew_root), "--tune-on", "train",
                 "--output-dir", str(tmp_path / "o6")]) == 2
    assert "--tune-on: not used with --dataset csv" in capsys.readouterr().err
    assert main(["evaluate", *common, "--dataset", "affwild2", "--data-root", str(afew_root), "--crop", "refine",
                 "--output-dir", str(tmp_path / "o5")]) == 2
    assert "evaluate --crop refine is not supported" in capsys.readouterr().err
    assert not any((tmp_path / f"o{k}").exists() for k in range(1, 7))


# -- shot cuts (issue 26): smoothing starts afresh in each shot --------------------------------------------

def _write_cut_clip(folder, n_per_shot: int = 6) -> list[dict]:
    """Frames of two shots as image files (a slow pan over the astronaut, then over Grace Hopper) and their
    annotation rows (video ``cut``)."""
    import cv2

    from emonet.samples import sample_image

    folder.mkdir()
    rows = []
    for shot, name in enumerate(("astronaut", "grace_hopper")):
        photo = cv2.resize(sample_image(name)[:400, :400], (240, 240), interpolation=cv2.INTER_AREA)
        for k in range(n_per_shot):
            frame = shot * n_per_shot + k
            path = folder / f"{frame:03d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.roll(photo, 2 * k, axis=1), cv2.COLOR_RGB2BGR))
            rows.append({"video": "cut", "frame": frame, "valence": 0.5 - shot, "arousal": 0.1, "path": path.name})
    return rows


def test_video_evaluation_finds_cuts_and_restarts_smoothing_there(tmp_path):
    from conftest import ColourModel

    from emonet.evaluation.video import evaluate_video, shot_numbers

    rows = _write_cut_clip(tmp_path / "frames")
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows).assign(path=[f"frames/{r['path']}" for r in rows]).to_csv(csv, index=False)
    dataset = build_video_dataset("video-csv", csv, None)
    assert shot_numbers(dataset).tolist() == [0] * 6 + [1] * 6  # found on the frames themselves
    ema = SmoothingSetting("ema", (("alpha", 0.3),))
    result = evaluate_video(ColourModel(), dataset, [SmoothingSetting("none"), ema], device="cpu", progress=False,
                            n_boot=0)
    frames = result.frames
    assert frames["shot"].tolist() == [0] * 6 + [1] * 6 and result.info["n_shots"] == 2
    raw, smoothed = frames["pred_valence"].to_numpy(), frames["pred_valence_ema"].to_numpy()
    assert smoothed[6] == raw[6] and smoothed[0] == raw[0], "each shot starts from its own first value"
    assert smoothed[7] != raw[7], "smoothed within the shot"
    # the same frames as one sequence (no shot column): the first shot's values carry into the second
    assert apply_smoothing(frames.drop(columns="shot"), ema)[6, 0] != raw[6]


def test_a_video_csv_may_number_its_shots(tmp_path):
    from emonet.evaluation.video import shot_numbers

    rows = _write_cut_clip(tmp_path / "frames", n_per_shot=2)
    csv = tmp_path / "labels.csv"
    table = pd.DataFrame(rows).assign(path=[f"frames/{r['path']}" for r in rows], shot=[0, 0, 0, 1])
    table.to_csv(csv, index=False)
    assert shot_numbers(build_video_dataset("video-csv", csv, None)).tolist() == [0, 0, 0, 1]  # as given
    table.assign(shot=[0, 0, -1, 1]).to_csv(csv, index=False)
    with pytest.raises(VideoLayoutError, match=r"labels\.csv.*shot"):
        build_video_dataset("video-csv", csv, None)

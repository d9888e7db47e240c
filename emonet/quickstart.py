"""The main job (`make run`): every step of the pipeline at smoke scale on embedded data, one output folder.

Each step runs the same command a user runs on real data (printed before it runs), in a subprocess:
EMOTIC-format fixture -> visibility -> preprocess (faces >= 50% visible) -> train (ResNet-18 dual-head, tiny) ->
review (metrics + figures) -> video engine on a generated sample clip. When ``weights/emonet_8.pth`` is
missing, it is first downloaded and verified (licence printed; a few seconds' timeout, so an offline machine
does not wait; skipped with ``offline=True`` or ``EMONET_NO_DOWNLOAD=1``). With the official EmoNet the face
step and the video step use it; offline, the video step uses the model trained in step 4 (never random
weights) and one line says how to get the real one.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from emonet.data.fixtures import write_emotic_fixture
from emonet.hub import OFFICIAL_WEIGHTS, WEIGHTS_DIR, download_weights
from emonet.samples import write_sample_video, write_samples

REPO_ROOT = Path(__file__).resolve().parent.parent


class StepFailed(RuntimeError):
    pass


def _run(title: str, args: list[str], log: Path) -> float:
    """Run one pipeline command, echoing it; its output goes to ``log`` (the tail is shown)."""
    command = [sys.executable, *args]
    print(f"\n== {title}\n$ {' '.join(shlex.quote(str(a)) for a in ['python', *args])}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as f:
        result = subprocess.run([str(a) for a in command], cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        print("\n".join(log.read_text().strip().splitlines()[-6:]))
        raise StepFailed(f"step failed ({title}); full log: {log}")
    print("\n".join(log_tail(log.read_text())))
    print(f"   ({elapsed:.1f} s, log: {log})")
    return elapsed


ECHO_LINES = 6
ECHO_WIDTH = 160


def log_tail(text: str, lines: int = ECHO_LINES, width: int = ECHO_WIDTH) -> list[str]:
    """The last ``lines`` lines of a step's log that are not progress bars, long ones wrapped at word
    boundaries onto indented continuation lines (cutting at a fixed column split words and paths)."""
    kept = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    shown: list[str] = []
    for line in kept[-lines:]:
        shown += textwrap.wrap(line, width, subsequent_indent="    ", break_long_words=False,
                               break_on_hyphens=False) or [line]
    return shown


# Set (to anything but 0/empty) to never download on the first run: CI, air-gapped machines.
NO_DOWNLOAD_ENV = "EMONET_NO_DOWNLOAD"
FIRST_RUN_TIMEOUT_S = 5.0  # per connection/read: an offline machine gives up at once, a slow link still works


def fetch_official_weights(weights: str | os.PathLike, offline: bool = False) -> bool:
    """Make sure the official ``emonet_8`` checkpoint is at ``weights`` (only for the default place):
    download and verify it unless offline. Returns whether the file is there; prints one line either way."""
    path = Path(weights)
    if path.is_file():
        return True
    official = WEIGHTS_DIR / "emonet_8.pth"
    if path.resolve() != official.resolve():
        print(f"\n{path} not found: the EmoNet steps are skipped (no download for a path of your own)")
        return False
    hint = "`python -m emonet download` fetches the official EmoNet (needs internet), then run this again"
    if offline or os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0"):
        print(f"\noffline run ({'--offline' if offline else NO_DOWNLOAD_ENV}): the smoke pipeline without EmoNet; {hint}")
        return False
    info = OFFICIAL_WEIGHTS["emonet_8"]
    print(f"\n== [0/7] first run: downloading the official EmoNet ({info.url}); licence {info.license}: "
          "research use only, see weights/README.md")
    try:
        download_weights("emonet_8", official.parent, timeout=FIRST_RUN_TIMEOUT_S)
    except RuntimeError as exc:
        print(f"   could not download it ({exc.__cause__ or exc}): the smoke pipeline runs without EmoNet; {hint}")
        return False
    print(f"   {official}: downloaded, git blob SHA-1 verified")
    return True


def run_quickstart(output_dir: str, weights: str = "weights/emonet_8.pth", device: str = "auto",
                   offline: bool = False) -> int:
    out = Path(output_dir).resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    have_emonet = fetch_official_weights(weights, offline)
    print("SMOKE-SCALE RUN on data generated from images shipped with installed packages: it checks that every "
          "step works; its numbers mean nothing. See README (Pipeline) for the real datasets and weights.")
    start = time.perf_counter()

    emotic = out / "data" / "emotic"
    vis = out / "data" / "emotic_visibility"
    print(f"\n== [1/7] EMOTIC-format fixture -> {emotic}")
    write_emotic_fixture(emotic, n_per_split={"train": 48, "val": 16, "test": 16}, seed=0)
    vis.mkdir(parents=True, exist_ok=True)
    try:
        for split in ("train", "val", "test"):
            extra = ["--histogram", vis / "visibility_train.png"] if split == "train" else []
            _run(f"[2/7] face visibility ({split})",
                 ["-m", "emonet", "visibility", "--annotations", emotic / f"annot_arrs_{split}.csv", "--arrays", emotic / "img_arrs",
                  "--output", vis / f"annot_arrs_{split}.csv", "--no-progress", *extra], logs / f"2_face_visibility_{split}.log")
        # --min-visibility 50 as in the README's pipeline: crops without a visible face stay out of training and review
        _run("[3/7] preprocessing (faces at least 50% visible)",
             ["-m", "emonet", "preprocess", "--data-root", vis, "--output-dir", emotic, "--min-visibility", "50"],
             logs / "3_preprocessing.log")
        train_dir = out / "train"
        _run("[4/7] training (ResNet-18 dual-head, 64 px, 2 epochs)",
             ["-m", "emonet", "train", "--config", "configs/smoke.yaml", "--data-root", emotic, "--limit", "48",
              "--output-dir", train_dir, "--device", device, "--overwrite", "--no-progress"], logs / "4_train.log")
        checkpoint = train_dir / "best.pth"
        _run("[5/7] evaluation report (metrics + figures)",
             ["-m", "emonet", "review", "--weights", checkpoint, "--annotations", emotic / "normalized_dataset_test.csv",
              "--arrays", emotic / "img_arrs", "--output-dir", out / "review", "--num-samples", "8",
              "--detailed-samples", "2", "--device", device, "--no-progress"], logs / "5_review.log")
        samples = out / "sample_images"
        write_samples(samples)
        if have_emonet:
            _run("[6/7] EmoNet on the sample images",
                 ["-m", "emonet", "predict", "--weights", weights, "--device", device, "--output",
                  out / "predictions.csv", "--save-annotated", out / "annotated_images", samples],
                 logs / "6_predict.log")
        else:
            print(f"\n== [6/7] EmoNet on the sample images: skipped, {weights} not found "
                  "(python -m emonet download gets the official checkpoints)")
        video = write_sample_video(out / "video" / "sample.mp4", seconds=4.0, fps=10.0)
        video_weights = weights if have_emonet else checkpoint
        _run(f"[7/7] video engine on a generated clip ({'EmoNet' if have_emonet else 'the model trained in step 4'})",
             ["-m", "emonet", "video", "--weights", video_weights, "--source", video, "--output",
              out / "video" / "frames.csv", "--output-video", out / "video" / "annotated.mp4", "--plot",
              out / "video" / "valence_arousal.png", "--smoothing", "ema", "--device", device, "--no-progress"], logs / "7_video.log")
    except StepFailed as exc:
        print(f"\nerror: {exc}")
        return 1
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Everything is under {out}:")
    for path in ("data/emotic_visibility/visibility_train.png", "data/emotic/normalization.json", "train/log.csv",
                 "train/curves.png", "train/best.pth", "review/metrics.json", "review/va_scatter.png",
                 "video/frames.csv", "video/annotated.mp4", "video/valence_arousal.png",
                 *(("predictions.csv", "annotated_images") if have_emonet else ())):
        print(f"  {out / path}{'' if (out / path).exists() else '  (missing)'}")
    return 0

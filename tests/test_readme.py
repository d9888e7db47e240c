"""README.md stays a newcomer's page whose commands run as written.

* The pipeline table (between ``<!-- pipeline:start -->`` and ``<!-- pipeline:end -->``) is run step by step,
  exactly as written, in a temporary folder: each step's inputs must exist before it runs (made by earlier
  steps) and the files its ``writes`` column names must exist after it.
* Cheap checks: the README's length, its opening commands, and every relative link of README.md,
  docs/*.md and bench/README.md points to an existing file.
"""

from __future__ import annotations

import json
import re

import pytest
from readme_pipeline import README, REPO_ROOT, SPLITS, pipeline_steps

MAX_README_LINES = 260
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_length_and_opening():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    opening = "\n".join(lines[:8])
    assert "make run" in opening and "make test" in opening


def test_relative_links_point_to_existing_files():
    pages = [README, REPO_ROOT / "bench" / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links in code blocks are not links
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target}")
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_python_api_snippet_runs_on_a_photo_without_a_face(tmp_path, official_checkpoint_8, sample_images_dir):
    """The README's "Python API" block, run as written but for its file names: a photo without a face gives
    no rows and no error (a snippet reading ``faces[0]`` raised IndexError there)."""
    import subprocess
    import sys

    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    replacements = {
        "emonet.Predictor()": f"emonet.Predictor({str(official_checkpoint_8)!r}, backend='torch', device='cpu')",
        '"photo.jpg"': repr(str(sample_images_dir / "coffee.jpg")),
        '"a.jpg"': repr(str(sample_images_dir / "astronaut.jpg")),
        '"b.jpg"': repr(str(sample_images_dir / "chelsea.jpg")),
    }
    for old, new in replacements.items():
        assert old in code, f"README Python API block: {old} not found"
        code = code.replace(old, new)
    code += "\nprint('table', table['path'].map(lambda p: p.rsplit('/', 1)[-1]).tolist(), table['error'].tolist())\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.splitlines()
    assert len(printed) == 1 and printed[0].startswith("table ['astronaut.jpg', 'chelsea.jpg']"), printed  # coffee: none
    assert "no face" in printed[0]  # chelsea's row says why it has no values


def test_pipeline_table_chains():
    steps = pipeline_steps(README.read_text())
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 5
    for s in steps:
        assert s["writes"], f"step {s['step']}: no output named in the writes column"
        assert all(0 < n < s["step"] for n in s["reads"]), f"step {s['step']} reads a later step"
        assert s["step"] == 1 or s["reads"], f"step {s['step']} reads nothing from earlier steps"
    names = {p.split("/")[-1] for s in steps for p in s["writes"]}
    assert {"best.pth", "normalization.json"} <= names


@pytest.mark.timeout(900)
def test_pipeline_runs_as_written(readme_workspace):
    """Every pipeline command ran as written, in order (the ``readme_workspace`` fixture), and its outputs
    carry what the next step needs."""
    work, _env, timings = readme_workspace
    print("; ".join(timings))

    import pandas as pd

    for split in SPLITS:
        vis = pd.read_csv(work / "data" / "emotic_vis" / f"annot_arrs_{split}.csv")
        assert "Face_Visibility" in vis.columns
        norm = pd.read_csv(work / "data" / "emotic" / f"normalized_dataset_{split}.csv")
        assert len(norm) > 0 and norm["Valence"].between(-1, 1).all() and norm["Arousal"].between(-1, 1).all()
        assert (norm["Face_Visibility"] >= 50).all()
    metrics = json.loads((work / "runs" / "emotic" / "review" / "metrics.json").read_text())
    n_test = len(pd.read_csv(work / "data" / "emotic" / "normalized_dataset_test.csv"))
    assert metrics["n_samples"] == n_test and metrics["arch"] == "resnet18_dual_head"
    frames = pd.read_csv(work / "runs" / "emotic" / "video.csv")
    assert len(frames) > 0 and frames["valence"].between(-1, 1).all()

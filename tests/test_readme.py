"""README.md stays a newcomer's page whose commands run as written.

* The pipeline table (between ``<!-- pipeline:start -->`` and ``<!-- pipeline:end -->``) is run step by step,
  exactly as written, in a temporary folder: each step's inputs must exist before it runs (made by earlier
  steps) and the files its ``writes`` column names must exist after it.
* Cheap checks: the README's length, its opening commands, and every relative link of README.md,
  docs/*.md and bench/README.md points to an existing file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
MAX_README_LINES = 260
SPLITS = ("train", "val", "test")
# Flags whose value is a path the step reads (outputs are --output and --output-dir in every command).
INPUT_FLAGS = {"--arrays", "--annotations", "--weights", "--data-root", "--config"}
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|\s*$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pipeline_steps(text: str) -> list[dict]:
    """Rows of the README's pipeline table: step number, command, steps it reads, paths it writes."""
    try:
        block = text.split("<!-- pipeline:start -->", 1)[1].split("<!-- pipeline:end -->", 1)[0]
    except IndexError:
        raise AssertionError("README.md: no <!-- pipeline:start --> ... <!-- pipeline:end --> block") from None
    steps = []
    for line in block.strip().splitlines():
        match = ROW.match(line.strip())
        if match:
            number, command, reads, writes = match.groups()
            steps.append({"step": int(number), "command": command,
                          "reads": [int(n) for n in re.findall(r"\d+", reads)],
                          "writes": expand_writes(re.findall(r"`([^`]+)`", writes))})
    return steps


def expand_writes(items: list[str]) -> list[str]:
    """`a/b/{x,y}.csv` -> a/b/x.csv, a/b/y.csv; `{split}` -> each split; a bare name is in the previous item's folder."""
    paths: list[str] = []
    folder = ""
    for item in items:
        if "/" not in item and "." not in item:  # a column name such as Face_Visibility, not a path
            continue
        if "/" not in item.rstrip("/"):
            item = f"{folder}/{item}" if folder else item
        folder = item.rstrip("/").rsplit("/", 1)[0] if "/" in item.rstrip("/") else ""
        item = item.replace("{split}", "{" + ",".join(SPLITS) + "}")
        match = re.search(r"\{([^}]*)\}", item)
        options = match.group(1).split(",") if match else [None]
        for option in options:
            paths.append(item if option is None else item[:match.start()] + option + item[match.end():])
    return paths


def input_paths(command: str) -> list[str]:
    """Paths a command reads (values of INPUT_FLAGS), skipping shell variables."""
    words = shlex.split(command)
    found = []
    for flag, value in zip(words, words[1:]):
        if flag in INPUT_FLAGS and "$" not in value:
            found.append(value)
    return found


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
def test_pipeline_runs_as_written(tmp_path):
    """Run every pipeline command as written, in order, in a fresh folder holding links to the repository."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in REPO_ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name not in {"data", "runs", "outputs", "tests"}:
            (work / entry.name).symlink_to(entry)
    shims = tmp_path / "bin"  # `python` in the README = this interpreter (the venv's)
    shims.mkdir()
    (shims / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shims / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg",
           "EMONET_CACHE": str(tmp_path / "cache")}

    timings = []
    for s in pipeline_steps(README.read_text()):
        missing = [p for p in input_paths(s["command"]) if not (work / p).exists()]
        assert not missing, f"step {s['step']} reads {missing}, which no earlier step wrote"
        started = time.perf_counter()
        result = subprocess.run(["bash", "-e", "-c", s["command"]], cwd=work, env=env, capture_output=True,
                                text=True, timeout=600)
        timings.append(f"step {s['step']}: {time.perf_counter() - started:.1f} s")
        assert result.returncode == 0, (f"step {s['step']} failed (exit {result.returncode}): {s['command']}\n"
                                        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        absent = [p for p in s["writes"] if not (work / p).exists()]
        assert not absent, f"step {s['step']} did not write {absent}: {s['command']}"
    print("; ".join(timings))

    # The outputs carry what the next step needs.
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

"""The README's pipeline table: parsed, and run as written in a fresh folder (see tests/test_readme.py)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
SPLITS = ("train", "val", "test")
# Flags whose value is a path the step reads (outputs are --output and --output-dir in every command).
INPUT_FLAGS = {"--arrays", "--annotations", "--weights", "--data-root", "--config"}
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|\s*$")


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




def python_shim_env(tmp_path: Path) -> dict[str, str]:
    """An environment where ``python`` (as the docs write it) is this interpreter (the venv's)."""
    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    (shims / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shims / "python").chmod(0o755)
    return {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg",
            "EMONET_CACHE": str(tmp_path / "cache")}


def run_pipeline(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    """Run every pipeline command as written, in order, in a fresh folder holding links to the repository."""
    work = tmp_path / "work"
    work.mkdir()
    for entry in REPO_ROOT.iterdir():
        if not entry.name.startswith(".") and entry.name not in {"data", "runs", "outputs", "tests"}:
            (work / entry.name).symlink_to(entry)
    env = python_shim_env(tmp_path)
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
    return work, env, timings

#!/usr/bin/env python
"""The first ``predict`` with a new checkpoint, as a user meets it: when the first line appears, what the
backend probe costs, and the whole run, for a baseline revision and the working tree, side by side.

Each variant runs ``python -m emonet predict PHOTO --weights CKPT`` in a fresh process with an empty cache
(``$EMONET_CACHE``: no export, no choice), then once more on the same cache (a cached choice: no probe).
The baseline is the package as it was at ``--baseline`` (``git archive``, read-only), run from a temporary
folder. Output is read as it comes (progress bars redraw with ``\\r``), each line stamped with the seconds
since the process started.

A shared machine makes every wall time longer by its load (and eager PyTorch's 2-thread forwards suffer
from it far more than ONNX Runtime's), so each run also gives the CPU seconds the process used: what an idle
machine would need too. On an idle 2-core machine a run's wall time lies between its CPU seconds / 2 (both
cores busy all along) and its CPU seconds; the probe's own CPU cost is the first run's minus the cached run's.

    .venv/bin/python bench/bench_probe.py --json bench/results/probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import REPO_ROOT, load_average, machine_info, machine_line

# The probe's revision before issue 27 (progress before the first forward, bounded candidates skipped).
DEFAULT_BASELINE = "91f0a2a"


def write_checkpoint(path: Path, seed: int = 0) -> Path:
    """An official-layout EmoNet-8 state dict with seeded random weights (speed does not depend on them)."""
    import torch

    from emonet.models import create_model

    torch.manual_seed(seed)
    torch.save(create_model("emonet", n_expression=8).state_dict(), path)
    return path


def baseline_tree(revision: str, folder: Path) -> Path:
    """The ``emonet`` package at ``revision``, unpacked into ``folder`` (``git archive``: nothing changes in the
    repository)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", revision, "emonet"], cwd=REPO_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def timed_lines(command: list[str], cwd: Path, env: dict) -> tuple[list[tuple[float, str]], float, int, float]:
    """Run ``command``; every output line (split at ``\\n`` and ``\\r``) with its seconds since the start,
    the wall time, the exit code and the CPU seconds (user + system) the process used."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, pending = [], b""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        now = time.perf_counter() - start
        parts = re.split(rb"[\r\n]", pending + chunk)
        pending = parts.pop()
        lines += [(now, p.decode(errors="replace")) for p in parts if p.strip()]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if pending.strip():
        lines.append((wall, pending.decode(errors="replace")))
    return lines, wall, code, usage.ru_utime + usage.ru_stime


def first_at(lines: list[tuple[float, str]], pattern: str) -> tuple[float, re.Match] | tuple[None, None]:
    for seconds, line in lines:
        match = re.search(pattern, line)
        if match:
            return seconds, match
    return None, None


def summarise(lines: list[tuple[float, str]], wall: float, code: int, cpu_s: float) -> dict:
    """The figures of one run: first line, first probe line, the probe's own seconds and timings, the total."""
    probe_at, _ = first_at(lines, r"backend probe: ")
    _, chose = first_at(lines, r"backend probe: chose (\S+) in ([0-9.]+) s")
    _, timed = first_at(lines, r"backend probe: timed: (.*)")
    _, backend = first_at(lines, r"backend: (\S+ [a-z0-9]+)")
    timings = dict(re.findall(r"(\S+/fp32) ([0-9.]+) ms", timed.group(1))) if timed else {}
    eager_ms = float(timings["torch/fp32"]) if "torch/fp32" in timings else None
    probe_s = float(chose.group(2)) if chose else None
    row = {"exit_code": code, "first_line_s": lines[0][0] if lines else None,
           "first_line": lines[0][1][:80] if lines else "", "first_probe_line_s": probe_at, "probe_s": probe_s,
           "backend": backend.group(1) if backend else None, "timed_ms": {k: float(v) for k, v in timings.items()},
           "eager_ms": eager_ms, "total_s": round(wall, 2), "cpu_s": round(cpu_s, 1),
           "probed": probe_at is not None, "load_after": load_average()}
    return row


def run_variant(name: str, root: Path, photo: Path, weights: Path, work: Path) -> dict[str, dict]:
    """The first run (empty cache) and a second one (cached choice) of one variant."""
    cache = work / f"cache-{name}"
    env = {**os.environ, "EMONET_CACHE": str(cache), "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "1"}
    env.pop("EMONET_CHOICE_CACHE", None)
    command = [sys.executable, "-m", "emonet", "predict", str(photo), "--weights", str(weights)]
    results = {}
    for run in ("first", "cached"):
        load = load_average()
        lines, wall, code, cpu = timed_lines(command + ["-o", str(work / f"{name}-{run}.csv")], root, env)
        results[run] = {"load_before": load, **summarise(lines, wall, code, cpu)}
        results[run]["lines"] = [f"{s:7.2f} {line[:160]}" for s, line in lines]
        print(f"  {name}/{run}: {results[run]['total_s']} s, {results[run]['cpu_s']} CPU s (exit {code}, load {load} "
              f"-> {results[run]['load_after']})", flush=True)
    results["first"]["probe_cpu_s"] = round(results["first"]["cpu_s"] - results["cached"]["cpu_s"], 1)
    return results


def print_table(results: dict[str, dict[str, dict]]) -> None:
    head = (f"{'variant':>9} {'run':>6} {'1st line s':>10} {'probe line s':>12} {'probe s':>8} {'total s':>8} "
            f"{'CPU s':>6} {'probe CPU s':>11} {'probed':>6}  load before -> after")
    print(head)
    for name, runs in results.items():
        for run, r in runs.items():
            cells = [r["first_line_s"], r["first_probe_line_s"], r["probe_s"], r["total_s"], r["cpu_s"],
                     r.get("probe_cpu_s")]
            text = " ".join(f"{'-' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(cells, (10, 12, 8, 8, 6, 11)))
            print(f"{name:>9} {run:>6} {text} {str(r['probed']):>6}  {r['load_before']} -> {r['load_after']}")
    for name, runs in results.items():
        print(f"{name} first run: backend {runs['first']['backend']}; timed {runs['first']['timed_ms']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of the 'before' variant "
                        "(default: %(default)s); 'none' runs the working tree alone")
    parser.add_argument("--photo", help="the photo to predict (default: the grace_hopper sample)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from emonet.samples import write_samples

    info = machine_info()
    print(machine_line(info))
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        work = Path(tmp)
        photo = Path(args.photo) if args.photo else write_samples(work / "samples", ("grace_hopper",))[0]
        weights = write_checkpoint(work / "emonet_8_generated.pth")
        variants = {} if args.baseline == "none" else {"before": baseline_tree(args.baseline, work / "baseline")}
        variants["after"] = REPO_ROOT
        results = {name: run_variant(name, root, photo, weights, work) for name, root in variants.items()}
    print_table(results)
    summary = {name: {run: {k: v for k, v in r.items() if k != "lines"} for run, r in runs.items()}
               for name, runs in results.items()}
    print(json.dumps({"baseline": args.baseline, "load_average": load_average(), "results": summary}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "baseline": args.baseline,
                                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/*.md cannot drift from the code.

Every fenced block of docs/*.md is preceded by a marker line saying how it is checked:

* ``<!-- docs-test: run -->``: run as written (bash blocks in ``bash -e``, Python blocks as a script) in the
  README pipeline's folder after the pipeline ran (``runs/emotic/best.pth``, ``data/emotic/`` ... exist there);
  the blocks of a page run in page order, so a block may use what an earlier one wrote.
* ``<!-- docs-test: check (needs ...) -->``: it needs what tests cannot have (the official weights, a dataset,
  a webcam, GPUs): every ``emonet`` command in it must parse with the command's real parser (no unknown flag),
  every repository file it names must exist, and Python code must compile and import only existing names.
* ``<!-- docs-test: not code (...) -->``: sample output, a file layout, SQL for another tool.

``docs/DESIGN.md``'s layer table must match ``LAYERS`` of tests/test_architecture.py, module by module.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from readme_pipeline import REPO_ROOT
from test_architecture import LAYERS

DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^(?P<marker><!-- docs-test: (?P<kind>run|check|not code)\b[^>]*-->\n)?"
                   r"```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.S | re.M)


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    kind: str | None  # run | check | not code | None (unmarked)
    body: str

    def where(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def doc_blocks() -> list[Block]:
    blocks = []
    for page in DOCS:
        text = page.read_text()
        for m in FENCE.finditer(text):
            line = text[:m.start("lang")].count("\n") + 1
            blocks.append(Block(page, line, m.group("lang"), m.group("kind"), m.group("body")))
    return blocks


BLOCKS = doc_blocks()


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments dropped, split at ``&&``, ``;``, ``|``."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in words:
            if word in ("&&", ";", "|", "||"):
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands.append(current)
    return [c for c in commands if c]


def emonet_invocation(words: list[str]) -> tuple[str, list[str]] | None:
    """``(command, arguments)`` of ``python -m emonet CMD ...``, ``emonet CMD ...`` or ``torchrun ... -m emonet CMD``."""
    if words[0] == "emonet" and len(words) > 1:
        return words[1], words[2:]
    for i in range(len(words) - 2):
        if words[i] == "-m" and words[i + 1] == "emonet":
            return words[i + 2], words[i + 3:]
    return None


def python_code(block: Block) -> list[str]:
    """Python sources in a block: the block itself, or the ``python -c "..."`` of a shell block."""
    if block.lang == "python":
        return [block.body]
    return [w[i + 1] for w in shell_commands(block.body) for i in range(len(w) - 1)
            if w[i] == "-c" and w[0] in ("python", "python3")]


def test_every_block_says_how_it_is_checked():
    unmarked = [f"{b.where()} ({b.lang or 'no language'})" for b in BLOCKS if b.kind is None]
    assert not unmarked, ("fenced blocks without a `<!-- docs-test: run | check (needs ...) | not code (...) -->` "
                          "line right before them:\n" + "\n".join(unmarked))
    assert any(b.kind == "run" for b in BLOCKS)


def _parser_flags(command: str) -> set[str]:
    from emonet.cli import command_parser

    return set(command_parser(command, f"emonet {command}")._option_string_actions)


def test_commands_use_existing_commands_and_flags():
    from emonet.cli import available_commands

    problems = []
    flags: dict[str, set[str]] = {}
    for block in (b for b in BLOCKS if b.kind in ("run", "check") and b.lang != "python"):
        for words in shell_commands(block.body):
            invocation = emonet_invocation(words)
            if invocation is None:
                continue
            command, arguments = invocation
            if command not in available_commands():
                problems.append(f"{block.where()}: no command `emonet {command}`")
                continue
            known = flags.setdefault(command, _parser_flags(command))
            for word in arguments:
                flag = word.split("=", 1)[0]
                if flag.startswith("--") and flag not in known:
                    problems.append(f"{block.where()}: `emonet {command}` has no option {flag}")
    assert not problems, "\n".join(problems)


def test_repository_files_named_in_commands_exist():
    missing = []
    for block in (b for b in BLOCKS if b.kind in ("run", "check")):
        for path in re.findall(r"\b((?:configs|weights|bench|demo|emodataset-on-emonet)/[\w./-]+\.(?:ya?ml|py|md))", block.body):
            if not (REPO_ROOT / path).exists():
                missing.append(f"{block.where()}: {path}")
    assert not missing, "repository files named in docs that do not exist:\n" + "\n".join(missing)


def _imported_names(tree: ast.AST) -> list[tuple[str, str | None]]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [(node.module, alias.name) for alias in node.names]
    return names


def _attribute_chains(tree: ast.AST, root: str) -> set[str]:
    """``emonet.x.y`` chains used in the code (``emonet.Predictor(...)``)."""
    chains = set()
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == root and parts:
            chains.add(".".join([root, *reversed(parts)]))
    return chains


def test_python_snippets_compile_and_import_existing_names():
    problems = []
    for block in (b for b in BLOCKS if b.kind in ("run", "check")):
        for source in python_code(block):
            try:
                tree = ast.parse(source)
            except SyntaxError as exc:
                problems.append(f"{block.where()}: does not compile: {exc}")
                continue
            for module, name in _imported_names(tree):
                if module.split(".")[0] != "emonet":
                    continue
                try:
                    imported = importlib.import_module(module)
                except ImportError as exc:
                    problems.append(f"{block.where()}: import {module}: {exc}")
                    continue
                if name is not None and not hasattr(imported, name):
                    problems.append(f"{block.where()}: {module} has no {name}")
            for chain in _attribute_chains(tree, "emonet"):
                target = importlib.import_module("emonet")
                for part in chain.split(".")[1:2]:
                    if not hasattr(target, part):
                        problems.append(f"{block.where()}: {chain}: emonet has no {part}")
    assert not problems, "\n".join(problems)


RUN_BLOCKS = [b for b in BLOCKS if b.kind == "run"]


@pytest.mark.timeout(900)
def test_runnable_blocks_run_as_written(readme_workspace):
    """Every ``run`` block, in page order, in the folder where the README pipeline ran."""
    work, env, _ = readme_workspace
    for block in RUN_BLOCKS:
        if block.lang == "python":
            argv = [sys.executable, "-c", block.body]
        else:
            argv = ["bash", "-e", "-c", block.body]
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (f"{block.where()} failed (exit {result.returncode}):\n{block.body}\n"
                                        f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def design_layer_table() -> dict[str, int]:
    """``{dotted module: layer}`` from docs/DESIGN.md's table (``| 3 | `emonet/crops.py` | ... |``)."""
    table = {}
    for line in (REPO_ROOT / "docs" / "DESIGN.md").read_text().splitlines():
        match = re.match(r"^\|\s*(\d+)\s*\|([^|]*)\|", line)
        if not match:
            continue
        for path in re.findall(r"`(emonet/[\w/]*?)(?:\.py|/)?`", match.group(2)):
            table[path.rstrip("/").replace("/", ".")] = int(match.group(1))
    return table


def test_design_layer_table_matches_the_architecture_test():
    table = design_layer_table()
    wrong = [f"{m}: DESIGN.md says layer {table[m]}, LAYERS says {LAYERS[m]}"
             for m in LAYERS if m in table and table[m] != LAYERS[m]]
    absent = sorted(m for m in LAYERS if m not in table and m != "emonet.__main__")
    extra = sorted(m for m in table if m not in LAYERS)
    assert not (wrong or absent or extra), (
        "docs/DESIGN.md's layer table and tests/test_architecture.py's LAYERS differ:\n"
        + "\n".join(wrong + [f"missing in DESIGN.md: {m}" for m in absent]
                    + [f"not in LAYERS: {m}" for m in extra]))

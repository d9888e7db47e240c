"""Architecture: the package's modules import only downward through its layers, and never in a circle.

Every ``import`` of the package is read with ``ast`` (at module top and inside functions alike), so an
import hidden in a function cannot bring a cycle back. The model registry refuses a name twice, and the
official checkpoints' metadata has one home.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from emonet import hub
from emonet.models import EmoNetWeights, register_model

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "emonet"

# The layer of each component of the package (a top-level module, or a subpackage with all its modules).
# An import must reach a component of a lower layer, or stay inside its own component (where the modules
# must still not form a cycle). Components of one layer do not import each other.
LAYERS: dict[str, int] = {
    # foundations: no project imports, or only of the layers below
    "emonet.errors": 0, "emonet.classes": 0, "emonet.devices": 0, "emonet.smoothing": 0,
    "emonet.landmarks": 0, "emonet.evaluation.metrics": 0, "emonet.boxes": 0,
    "emonet.lazy": 0, "emonet.nativelogs": 0,
    # a role package's lazy index (its modules have their own layers)
    "emonet.evaluation": 1,
    "emonet.fileio": 1, "emonet.records": 1, "emonet.images": 1, "emonet.samples": 1, "emonet.tracking": 1,
    "emonet.faces": 2, "emonet.preprocess": 2, "emonet.visualization": 2, "emonet.ledger": 2,
    # networks; the official checkpoints' files (found, downloaded); reading weights into networks
    "emonet.models": 2, "emonet.crops": 3, "emonet.hub": 3,
    "emonet.checkpoint": 4, "emonet.drawing": 4,
    # running them: backends, then the one image -> faces -> predictions path
    "emonet.inference": 5,
    "emonet.predictor": 6,
    # what is built on predictions
    "emonet.data": 7, "emonet.video": 7,
    "emonet.evaluation.dataset": 8, "emonet.data.visibility": 8, "emonet.quickstart": 8,
    "emonet.training": 9, "emonet.evaluation.review": 9, "emonet.app": 9, "emonet.batch": 9,
    "emonet.evaluation.video": 9,
    "emonet.training.affect": 10, "emonet.training.distill": 10,
    # entry points
    "emonet.cli": 11,
    "emonet.__main__": 12,
}


def package_modules() -> dict[str, Path]:
    """Dotted name -> file for every module of the package (a package is named by its ``__init__``)."""
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = package_modules()


def resolve(name: str) -> str | None:
    """The package module that ``name`` (a module, or a name inside one) lives in."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def component(module: str) -> str:
    """The longest ``LAYERS`` key that ``module`` is or lies in (``emonet.inference.runners`` ->
    ``emonet.inference``; ``emonet.evaluation.metrics`` is its own); else its top-level package or module."""
    parts = module.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in LAYERS:
            return ".".join(parts[:k])
    return ".".join(parts[:2])


def imports_of(module: str) -> list[tuple[str, int, str]]:
    """(imported package module, line, statement) for every import in ``module``, at any depth.

    Importing ``a.b.c`` from outside package ``a.b`` also runs ``a/b/__init__.py``: that counts as an import
    of ``a.b`` too (a cycle through a package's ``__init__`` is a cycle).
    """
    path = MODULES[module]
    found: dict[tuple[str, int], str] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                here = module.split(".") if is_package(module) else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        statement = ast.get_source_segment(path.read_text(), node) or ""
        for name in names:
            if not name.startswith("emonet"):
                continue
            target = resolve(name)
            if target is None or target == module:
                continue
            parents = [".".join(target.split(".")[:k]) for k in range(2, target.count(".") + 1)]
            for t in [*parents, target]:
                # a module's own package is already being initialised when the module runs
                if t in (module, "emonet") or module.startswith(t + "."):
                    continue
                found[t, node.lineno] = " ".join(statement.split())
    return [(target, line, statement) for (target, line), statement in found.items()]


GRAPH = {m: imports_of(m) for m in MODULES}


def where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(PACKAGE_DIR.parent)}:{line}"


def test_every_component_has_a_layer():
    missing = sorted({component(m) for m in MODULES if m != "emonet"} - set(LAYERS))
    assert not missing, f"add these to LAYERS in {Path(__file__).name}: {missing}"


def test_imports_go_down_the_layers():
    offending = []
    for module, imports in GRAPH.items():
        if module == "emonet":
            continue
        source = component(module)
        for target, line, statement in imports:
            destination = component(target)
            if destination == source or source not in LAYERS or destination not in LAYERS:
                continue  # same component: only the cycle rule; unknown ones: test_every_component_has_a_layer
            if LAYERS[destination] < LAYERS[source]:
                continue
            offending.append(
                f"{where(module, line)}: `{statement}`: {source} (layer {LAYERS[source]}) imports {destination} "
                f"(layer {LAYERS[destination]}), which is not below it"
            )
    assert not offending, "imports against the layering:\n" + "\n".join(offending)


def test_no_import_cycles():
    graph = {m: sorted({t for t, _, _ in imports}) for m, imports in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for module in graph:
        if module not in index:
            visit(module)
    report = []
    for members in cycles:
        report.append("cycle among " + ", ".join(members) + ":")
        report += [f"  {where(m, line)}: `{statement}`" for m in members for t, line, statement in GRAPH[m]
                   if t in members]
    assert not cycles, "\n".join(report)


def reexported_names(package: str) -> dict[str, str]:
    """Names that ``package``'s ``__init__`` imports from one of its own submodules -> that submodule."""
    path = MODULES[package]
    names = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            names.update({alias.asname or alias.name: node.module for alias in node.names})
    return names


def test_modules_of_a_package_import_its_submodules_not_its_init():
    """Inside a package, ``from emonet.video import VideoEngine`` would need ``emonet/video/__init__.py`` to have
    imported the engine already (it imports the package's modules in turn): import the defining submodule."""
    offending = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in MODULES:
                continue
            if not (is_package(node.module) and module.startswith(node.module + ".")):
                continue
            reexported = reexported_names(node.module)
            for alias in node.names:
                if alias.name in reexported:
                    offending.append(f"{where(module, node.lineno)}: {alias.name} from {reexported[alias.name]}, "
                                     f"not from {node.module}")
    assert not offending, "import these from their defining submodule:\n" + "\n".join(offending)


def test_registering_a_taken_model_name_raises():
    def another_builder(**kwargs):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'emonet' is already registered by emonet.models.emonet.emonet"):
        register_model("emonet")(another_builder)


def test_official_weights_metadata_has_one_home():
    assert set(hub.OFFICIAL_WEIGHTS) == {w.value.name for w in EmoNetWeights} == {"emonet_8", "emonet_5"}
    for weights in EmoNetWeights:
        assert hub.OFFICIAL_WEIGHTS[weights.value.name] is weights.value  # read from the models, not copied
        assert weights.value.classes == len(weights.value.class_names) == weights.value.config["n_expression"]

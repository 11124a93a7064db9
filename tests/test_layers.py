"""The house has one direction (docs/design.md, "Layers"), checked on the import graph read from the source.

Every ``import`` counts, wherever it stands (module level, inside a function, under ``TYPE_CHECKING``): a lazy
import is still a dependency. An import may go to its own layer or below, never above, and no set of modules
imports itself round in a circle. Private names of Optuna, Ray and torch appear only in the one adapter module
of each library.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "trainers", "nas", "dashboards")

#: Layers from the ground up; a module belongs to the last prefix it matches.
LAYERS = [
    ("ground: genes, mechanisms, attention zoo, model builder", ("search_spaces",)),
    ("trainers: data, proxy training, measurement", ("trainers",)),
    ("objectives", ("nas.objectives",)),
    ("study layer: record, storage, lease, front (Ray-free)", ("nas.study",)),
    ("readers of the study: export, dashboards", ("nas.export", "dashboards")),
    ("search engine: settings, driver, samplers, scheduler, Ray backend, trial", ("nas.engine",)),
    ("the CLI and the package facade", ("nas", "nas.cli", "nas.__main__")),
]

#: The one module per library allowed to use its private names, and the patterns that find them.
ADAPTERS = {
    "optuna": ("nas/study/optuna_adapter.py", r"optuna\.[a-z_.]*\._|from optuna\.[a-z_.]*\._|\._trial_id\b|"
                                              r"\._study_id\b|\._storage\b|\._backend\b"),
    "torch": ("trainers/torch_adapter.py", r"torch\.[a-z_.]*\._|from torch\.[a-z_.]*\._"),
    "ray": ("nas/engine/ray_backend.py", r"ray\.[a-z_.]*\._|from ray\.[a-z_.]*\._"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:  # "from nas import objectives" is an import of nas.objectives
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in modules else module)
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def layer(module: str) -> int:
    best, length = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    assert best >= 0, f"{module} belongs to no layer"
    return best


def test_every_import_goes_down_or_stays_on_its_floor():
    modules = _modules()
    upward = [f"{a} ({LAYERS[layer(a)][0]}) imports {b} ({LAYERS[layer(b)][0]})"
              for a, targets in _edges(modules).items() for b in sorted(targets) if layer(b) > layer(a)]
    assert not upward, "\n".join(upward)


def test_no_module_imports_itself_round_a_circle():
    edges = _edges(_modules())
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_dashboards_read_the_study_layer_and_never_the_engine():
    edges = _edges(_modules())
    for module, targets in edges.items():
        if module.startswith("dashboards"):
            assert not {t for t in targets if t.startswith(("nas.engine", "nas.cli"))}, module


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_private_names_of_a_library_only_in_its_adapter(library):
    adapter, pattern = ADAPTERS[library]
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel == adapter:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if re.search(pattern, code) and not code.lstrip().startswith(('"', "'", ":")):
                    found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_no_fault_injection_in_the_product():
    found = [f"{p.relative_to(ROOT)}:{n}" for package in ("nas", "trainers", "search_spaces")
             for p in (ROOT / package).rglob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bfaults?\b|inject", line)]
    assert not found, found


def test_user_attributes_are_written_in_one_module():
    writers = sorted({p.relative_to(ROOT).as_posix() for package in ("nas", "dashboards")
                      for p in (ROOT / package).rglob("*.py") if "set_user_attr(" in p.read_text()})
    assert writers == ["nas/study/record.py"]

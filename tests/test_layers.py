"""The package's layers, checked on every import: a module imports only from its own layer or the ones
below (core -> zoo -> training (with the method plug-ins) -> execution -> measurement -> analysis -> cli),
deferred imports inside functions included, and its module-level imports form no cycle."""

import ast
from pathlib import Path

from tests.conftest import REPO

RANKS = {
    "core": 0,
    "zoo": 1,
    "training": 2,
    "methods": 2,
    "baselines": 2,
    "execution": 3,
    "measurement": 4,
    "analysis": 5,
}
TOP = 6  # lcbench/cli.py, __main__, _preload, the package itself


def _modules() -> dict[str, Path]:
    found = {}
    for path in (REPO / "lcbench").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _rank(module: str) -> int:
    parts = module.split(".")
    return RANKS.get(parts[1], TOP) if len(parts) > 1 and parts[1] in RANKS else TOP


def _imports(name: str, path: Path, module_level_only: bool) -> set[str]:
    """The lcbench modules `name` imports (a `from package import module` counts as the module)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if module_level_only else _walk_skipping_deprecation_forwarding(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "lcbench" and not target.startswith("lcbench."):
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if child in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lcbench.")}
    return {m for m in found if m in MODULES and m != name}


def _walk_skipping_deprecation_forwarding(tree: ast.Module):
    """Every node but the body of a module `__getattr__` (an old name forwarded to its new, higher place
    for one release, with a warning)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for name, path in MODULES.items():
        for target in _imports(name, path, module_level_only=False):
            if _rank(target) > _rank(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_module_level_imports_form_no_cycle():
    graph = {name: _imports(name, path, module_level_only=True) for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if target.startswith(node + "."):  # a package importing its own submodules
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_every_layer_says_what_it_owns_and_what_it_may_import():
    for layer in ("core", "zoo", "training", "execution", "measurement"):
        doc = ast.get_docstring(ast.parse((REPO / "lcbench" / layer / "__init__.py").read_text())) or ""
        assert "import" in doc and len(doc) > 100, layer


def test_the_flat_import_paths_of_0_1_still_work_for_a_release_with_a_warning():
    import subprocess
    import sys

    script = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"  # a warning raised is the test's evidence
        "import lcbench.zoo.models as new\n"
        "try:\n"
        "    import lcbench.models\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "import lcbench.models as old\n"
        "from lcbench.config import run_id\n"
        "from lcbench.training.identity import run_id as new_run_id\n"
        "print(old is new, run_id is new_run_id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.splitlines() == [
        "lcbench.models moved to lcbench.zoo.models; the old path goes in lcbench 0.2",
        "True True",
    ]


def test_every_old_flat_path_points_at_a_module_that_exists():
    from lcbench._moved import MOVED

    missing = [new for new in MOVED.values() if new not in MODULES]
    assert not missing, missing

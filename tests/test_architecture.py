"""The architecture as the README describes it: no import cycles, the math packages free of Lightning and Hydra,
`tasks/` only tasks, one source of GITS defaults."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fewstep"
MATH = ("solvers", "schedules", "geometry", "metrics", "data", "models")
FRAMEWORKS = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports, at the top or inside a function (a lazy import is still a dependency)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {m for m in imports(name, path, known) if m in known and m != name} for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    edges = graph()
    assert "fewstep.config.plan" in edges and "fewstep.schedules.gits.search" in edges  # the walk saw the package
    assert cycles(edges) == []


def test_math_packages_import_neither_lightning_nor_hydra():
    edges, found = graph(), modules()
    for name, path in found.items():
        if name.split(".")[1:2] and name.split(".")[1] in MATH:
            direct = {m.split(".")[0] for m in imports(name, path, set(found))}
            assert not direct & set(FRAMEWORKS), f"{name} imports {direct & set(FRAMEWORKS)}"
            assert not {m for m in edges[name] if m.split(".")[1] not in (*MATH, "errors", "utils", "plotting")}, (
                f"{name} imports the framework side: {edges[name]}"
            )
    # and at run time, transitively (imports made inside functions are not run here)
    code = (
        "import sys\n"
        + "".join(f"import fewstep.{p}\n" for p in MATH)
        + "import fewstep.schedules.gits, fewstep.api, fewstep.plotting\n"
        + f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


FRAMEWORK_SIDE = ("fewstep.config", "fewstep.tasks", "fewstep.module", "fewstep.runner", "fewstep.command",
                  "fewstep.outputs", "fewstep.sweep")  # fmt: skip


def test_helpers_do_not_import_the_framework_side():
    edges = graph()
    for name, deps in edges.items():
        if name.startswith(("fewstep.utils", "fewstep.api", "fewstep.plotting", "fewstep.reporting")):
            assert not [d for d in deps if d.startswith(FRAMEWORK_SIDE)], (name, deps)


def test_nothing_imports_a_task_module_but_the_dispatcher():
    edges = graph()
    for name, deps in edges.items():
        if not name.startswith("fewstep.tasks") and name != "fewstep":  # fewstep.run(cfg) dispatches
            assert not [d for d in deps if d.startswith("fewstep.tasks")], f"{name} imports {deps}"
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert "fewstep.tasks" not in script.read_text(), f"{script.name} imports library code from a task"


def test_tasks_hold_only_task_functions():
    """Every public function of a task module is a task: it takes the composed config."""
    for path in (PACKAGE / "tasks").glob("*.py"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        public = [node for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
        classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
        assert not classes, f"{path.name} defines classes {classes}: library code belongs outside tasks/"
        tasks = [f for f in public if f.args.args and f.args.args[0].arg == "cfg"]
        assert tasks, f"{path.name} has no task function"
        assert len(path.read_text().splitlines()) < 200, f"{path.name} is no longer a short recipe"


def test_gits_defaults_have_one_source():
    from fewstep.schedules.gits import DEFAULTS

    shipped = yaml.safe_load((ROOT / "conf" / "schedule" / "gits.yaml").read_text())
    assert shipped.pop("name") == "gits"
    assert shipped == DEFAULTS

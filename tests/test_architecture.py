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
    assert "fewstep.app.config.plan" in edges and "fewstep.schedules.gits.method" in edges  # the walk saw the package
    assert cycles(edges) == []


def package_of(module: str) -> str:
    """The unit a module belongs to: a top-level subpackage of the library (`fewstep.schedules.gits.method` ->
    `fewstep.schedules`) or a top-level module (`fewstep.api`); the application is a second root whose subpackages
    and modules are units of their own (`fewstep.app.config.plan` -> `fewstep.app.config`)."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:2] == ["app"] else parts[:2])


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, deps in edges.items():
        found.setdefault(package_of(name), set()).update(
            package_of(d) for d in deps if package_of(d) != package_of(name)
        )
    return found


def test_no_package_level_import_cycles():
    packages = package_graph(graph())
    assert {"fewstep.schedules", "fewstep.solvers", "fewstep.models", "fewstep.app.config"} <= set(packages)
    assert cycles({k: v & set(packages) for k, v in packages.items()}) == []
    # the finder sees a cycle between packages made only of module-level edges that are not cycles themselves
    assert cycles(package_graph({"fewstep.a.x": {"fewstep.b.y"}, "fewstep.b.y": set(), "fewstep.b.z": {"fewstep.a.w"},
                                 "fewstep.a.w": set()})) == [["fewstep.a", "fewstep.b"]]  # fmt: skip


def test_the_layout_shows_the_two_halves():
    """The math library and the application are separate folders; nothing outside the application imports it
    (but the package's own entry points: `fewstep.run` and `python -m fewstep`)."""
    top = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert top == {*MATH, "app", "utils", "conf", "api.py", "errors.py", "__init__.py", "__main__.py"}, top
    for name, deps in graph().items():
        if not name.startswith("fewstep.app") and name not in ("fewstep", "fewstep.__main__"):
            assert not [d for d in deps if d.startswith("fewstep.app")], f"{name} imports the application: {deps}"


def test_math_packages_import_neither_lightning_nor_hydra():
    edges, found = graph(), modules()
    for name, path in found.items():
        if name.split(".")[1:2] and name.split(".")[1] in MATH:
            direct = {m.split(".")[0] for m in imports(name, path, set(found))}
            assert not direct & set(FRAMEWORKS), f"{name} imports {direct & set(FRAMEWORKS)}"
            assert not {m for m in edges[name] if m.split(".")[1] not in (*MATH, "errors", "utils")}, (
                f"{name} imports the framework side: {edges[name]}"
            )
    # and at run time, transitively (imports made inside functions are not run here)
    code = (
        "import sys\n"
        + "".join(f"import fewstep.{p}\n" for p in MATH)
        + "import fewstep.schedules.gits, fewstep.schedules.oss, fewstep.schedules.ld3\n"
        + "import fewstep.api, fewstep.schedules.plot\n"
        + f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


LIGHTNING_SIDE = ("fewstep.app.config", "fewstep.app.tasks", "fewstep.app.lightning_modules", "fewstep.app.runner",
                  "fewstep.app.command", "fewstep.app.outputs", "fewstep.app.sweep")  # fmt: skip


def test_helpers_do_not_import_the_framework_side():
    edges = graph()
    for name, deps in edges.items():
        if name.startswith(("fewstep.utils", "fewstep.api", "fewstep.app.plots", "fewstep.app.reporting")):
            assert not [d for d in deps if d.startswith(LIGHTNING_SIDE)], (name, deps)


def test_nothing_imports_a_task_module_but_the_dispatcher():
    edges = graph()
    for name, deps in edges.items():
        if not name.startswith("fewstep.app.tasks") and name not in ("fewstep", "fewstep.app.command"):
            assert not [d for d in deps if d.startswith("fewstep.app.tasks")], f"{name} imports {deps}"
    for script in (ROOT / "benchmarks").glob("*.py"):
        assert "fewstep.app.tasks" not in script.read_text(), f"{script.name} imports library code from a task"


def test_tasks_hold_only_task_functions():
    """Every public function of a task module is a task: it takes the composed config."""
    paths = [p for p in (PACKAGE / "app" / "tasks").glob("*.py") if p.name != "__init__.py"]
    assert len(paths) >= 5
    for path in paths:
        tree = ast.parse(path.read_text())
        public = [node for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
        classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
        assert not classes, f"{path.name} defines classes {classes}: library code belongs outside tasks/"
        tasks = [f for f in public if f.args.args and f.args.args[0].arg == "cfg"]
        assert tasks, f"{path.name} has no task function"
        assert len(path.read_text().splitlines()) < 200, f"{path.name} is no longer a short recipe"


SEARCH_NAMES = ("gits", "oss", "ld3")


def branches_on_a_search(tree: ast.AST) -> list[str]:
    """Where code picks by a search's name: imports of a search package, comparisons with its name, dicts keyed by
    it, a `.get(..., "gits")` default (docstrings and a public default argument are not branches)."""

    def named(node) -> bool:
        values = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
        return any(isinstance(v, ast.Constant) and v.value in SEARCH_NAMES for v in values)

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            tuple(f"fewstep.schedules.{n}" for n in SEARCH_NAMES)
        ):
            found.append(f"imports {node.module}")
        elif isinstance(node, ast.Compare) and any(named(c) for c in [node.left, *node.comparators]):
            found.append(f"compares with a search's name (line {node.lineno})")
        elif isinstance(node, ast.Dict) and any(k is not None and named(k) for k in node.keys):
            found.append(f"a dict keyed by a search's name (line {node.lineno})")
        elif (
            isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and any(named(a) for a in node.args)
        ):
            found.append(f"defaults to a search's name (line {node.lineno})")
    return found


def test_the_search_finder_finds_branches():
    code = "from fewstep.schedules.gits import x\nif n in ('gits', 'oss'): pass\nd = {'oss': 1}\nm = r.get('m', 'gits')"
    assert len(branches_on_a_search(ast.parse(code))) == 4
    assert branches_on_a_search(ast.parse('def f(method="gits"):\n    """method="oss" too"""')) == []


def test_no_module_outside_schedules_branches_on_a_search():
    """Searches are reached through the registry (`fewstep.schedules.searches`) or a record's "method"."""
    for name, path in modules().items():
        if not name.startswith("fewstep.schedules"):
            assert branches_on_a_search(ast.parse(path.read_text())) == [], name


def test_gits_defaults_have_one_source():
    from fewstep.schedules.gits import DEFAULTS

    shipped = yaml.safe_load((ROOT / "conf" / "schedule" / "gits.yaml").read_text())
    assert shipped.pop("name") == "gits"
    assert shipped == DEFAULTS

"""The import graph of bench/, read from the source (ast, nothing imported): no cycle among its
modules, and no private name (a leading underscore) imported from another bench module.

Every import counts, at module level (under `if TYPE_CHECKING:` too) or inside a function: a
function-local import that dodges a cycle at import time is still a cycle in the design (two
modules that cannot be read, changed or reused apart). A private name needed by another module
is shared, and belongs public in the module that owns it. An edge is an explicit import only:
importing bench.data.catalog is an edge to that module, not also to the package bench.data whose
__init__ Python runs first (which would make every package that imports its own submodules a
cycle)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
# Private imports in files another change owns, each to be made public there (issue 34): listed so
# that the rest of bench/ is held to the rule now. An entry that no longer occurs fails the test.
PENDING: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported, or the one a name is taken from
    name: str | None  # that name (None: the module itself)
    line: int
    local: bool  # inside a function, not at module level

    def where(self, root: Path) -> str:
        path = module_files(root, self.source.split(".")[0])[self.source].relative_to(root)
        return f"{path}:{self.line}" + (", inside a function" if self.local else "")


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root`, by dotted name."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return head and [*head, node.attr]
    return None


def imports(root: Path, package: str) -> Iterator[Import]:
    """Each import of a module of `package` by one of them, and each use of a private attribute
    of an imported module (`records._helper` after `from . import records`) as a name import."""
    known = module_files(root, package)
    for source, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        here = source if path.name == "__init__.py" else source.rpartition(".")[0]
        local = {
            id(node)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            for node in ast.walk(fn)
        }
        bound: dict[str, str] = {}  # a name in this file -> the module it is
        for node in ast.walk(tree):
            inner = id(node) in local
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    found = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
                    target = next((m for m in found if m in known), None)
                    if target is None:
                        continue
                    yield Import(source, target, None, node.lineno, inner)
                    bound[alias.asname or parts[0]] = alias.name if alias.asname else parts[0]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    if f"{base}.{alias.name}" in known:
                        yield Import(source, f"{base}.{alias.name}", None, node.lineno, inner)
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                    elif base in known:
                        yield Import(source, base, alias.name, node.lineno, inner)
        for node in ast.walk(tree):
            chain = _dotted(node) if isinstance(node, ast.Attribute) else None
            if not chain or chain[0] not in bound:
                continue
            module = bound[chain[0]]
            for attr in chain[1:]:
                if f"{module}.{attr}" not in known:
                    if _private(attr):
                        yield Import(source, module, attr, node.lineno, id(node) in local)
                    break
                module = f"{module}.{attr}"


def private_imports(root: Path, package: str) -> list[Import]:
    return [
        i
        for i in imports(root, package)
        if i.name is not None and _private(i.name) and i.target != i.source
    ]


def cycles(root: Path, package: str) -> list[list[Import]]:
    """One cycle (its edges, in order) per group of modules that import each other, directly or
    through others (a strongly connected component of more than one module)."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports(root, package):
        if i.target != i.source:
            edges.setdefault(i.source, {}).setdefault(i.target, i)
    found = []
    for group in _components(edges):
        if len(group) < 2:
            continue
        start = min(group)
        paths = {start: []}  # breadth first from `start`, back to it within the group
        todo = [start]
        while todo:
            module = todo.pop(0)
            for target, edge in sorted(edges.get(module, {}).items()):
                if target == start:
                    found.append([*paths[module], edge])
                    todo = []
                    break
                if target in group and target not in paths:
                    paths[target] = [*paths[module], edge]
                    todo.append(target)
    return found


def _components(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = set()
            while not group or module not in group:
                group.add(stack.pop())
            groups.append(group)

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return groups


def _cycle_text(cycle: list[Import]) -> str:
    return cycle[0].source + "".join(f" -> {i.target} ({i.where(ROOT)})" for i in cycle)


def test_no_bench_module_imports_itself_back_through_others():
    found = cycles(ROOT, "bench")
    assert not found, "import cycles:\n" + "\n".join(_cycle_text(c) for c in found)


def test_no_private_name_is_imported_from_another_bench_module():
    found = private_imports(ROOT, "bench")
    new = [i for i in found if (i.source, i.target, i.name) not in PENDING]
    assert not new, "private names imported:\n" + "\n".join(
        f"{i.where(ROOT)}: {i.source} uses {i.target}.{i.name}" for i in new
    )
    gone = PENDING - {(i.source, i.target, i.name) for i in found}
    assert not gone, f"no longer imported, drop from PENDING: {gone}"


def test_the_graph_is_read_from_every_kind_of_import():
    edges = {(i.source, i.target) for i in imports(ROOT, "bench")}
    assert ("bench.runner", "bench.cell") in edges  # from .cell import ...
    assert ("bench.runner", "bench.data") in edges  # from . import data as datasets
    assert ("bench.cli", "bench.runner") in edges  # inside a function
    assert ("bench.tasks.likelihood", "bench.train") in edges  # from ..train import ...
    assert ("bench.samples.make_samples", "bench.data") in edges  # from bench.data import ...


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_cycle_through_a_function_local_import_is_found(tmp_path):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .b import run\n",
            "pkg/b.py": "def run():\n    from . import c\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "from .a import run\n",  # imports into the cycle, is not in it
        },
    )
    (cycle,) = cycles(tmp_path, "pkg")
    assert [(i.source, i.target, i.local) for i in cycle] == [
        ("pkg.a", "pkg.b", False),
        ("pkg.b", "pkg.c", True),
        ("pkg.c", "pkg.a", False),
    ]
    assert cycle[1].where(tmp_path) == "pkg/b.py:2, inside a function"


B_PY = """\
import pkg.sub.inner as inner
def f():
    from .sub import _shared
    return inner._shared, inner.public
"""


def test_a_private_name_taken_from_another_module_is_found_however_it_is_reached(tmp_path):
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from .inner import _shared\n",
            "pkg/sub/inner.py": "def _shared(): pass\n_shared()\n",
            "pkg/a.py": "from . import sub\nsub.inner._shared()\nsub.__name__\n",
            "pkg/b.py": B_PY,
        },
    )
    found = {(i.source, i.target, i.name, i.local) for i in private_imports(tmp_path, "pkg")}
    assert found == {
        ("pkg.sub", "pkg.sub.inner", "_shared", False),
        ("pkg.a", "pkg.sub.inner", "_shared", False),
        ("pkg.b", "pkg.sub", "_shared", True),
        ("pkg.b", "pkg.sub.inner", "_shared", True),
    }

"""
The shape of gatehouse's imports: no module imports itself through others
(no circle), and the protocol-neutral core never imports a protocol
package (it reaches adapters by name, through L{gatehouse.protocols}).

The graph is read from the source (the AST), not from C{sys.modules}:
every C{import} counts, also one inside a function.  Imports under
C{if TYPE_CHECKING:} never run, so they are not edges of a circle; they do
count for "the core never imports a protocol".
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import gatehouse

#: modules below it are protocol packages; the package itself is the registry
PROTOCOLS = "gatehouse.protocols"


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Module name -> source file, for every module of the package at C{root}."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    node: ast.AST, typing_only: bool = False
) -> Iterator[tuple[ast.AST, bool]]:
    """Every import statement under C{node}, and whether only type checkers run it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, typing_only
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _imports(ast.Module([statement], []), True)
            for statement in child.orelse:
                yield from _imports(ast.Module([statement], []), typing_only)
        else:
            yield from _imports(child, typing_only)


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts))}


def import_graph(
    root: Path, package: str
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """
    The imports between the modules of the package at C{root}.

    @return: (runtime edges, type-checking-only edges), each module name ->
        the names of the package's modules it imports.  C{from a import b}
        counts as importing C{a.b} when that is a module, else C{a}; a
        module importing C{a.b} also imports package C{a} (Python runs
        C{a/__init__.py} first) unless C{a} is a package above the importer
        (being imported already: a submodule reaching a sibling through
        its package is no circle).
    """
    modules = _modules(root, package)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    runtime: dict[str, set[str]] = {name: set() for name in modules}
    typing: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, typing_only in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                base = node.module or ""
                if node.level:
                    parent = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                # "from a import b": module a.b if there is one, else a name of a
                targets = [
                    f"{base}.{alias.name}"
                    if f"{base}.{alias.name}" in modules
                    else base
                    for alias in node.names
                ]
            edges = typing[name] if typing_only else runtime[name]
            ancestors = _ancestors(name)
            for target in targets:
                found = known(target)
                if found is None or found == name:
                    continue
                edges.add(found)
                # Python runs the packages above it first, except those that
                # are already being imported (the importer's own).
                edges.update(
                    package
                    for package in _ancestors(found)
                    if package in modules and package not in ancestors
                )
    return runtime, typing


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep graph cannot hit the recursion limit.
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def core_imports_of_protocols(
    runtime: dict[str, set[str]],
    typing: dict[str, set[str]],
    protocols: str = PROTOCOLS,
) -> list[str]:
    """
    'core -> protocol' for each module outside the protocol packages below
    C{protocols} that imports one of them.
    """

    def in_protocol(name: str) -> bool:
        return name.startswith(protocols + ".")

    return sorted(
        f"{module} -> {target}"
        for graph in (runtime, typing)
        for module, targets in graph.items()
        if not in_protocol(module)
        for target in targets
        if in_protocol(target)
    )


ROOT = Path(gatehouse.__file__).parent
_graph: list[tuple[dict[str, set[str]], dict[str, set[str]]]] = []


def gatehouse_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """gatehouse's import graph, read once."""
    if not _graph:
        _graph.append(import_graph(ROOT, "gatehouse"))
    return _graph[0]


class ImportGraphTests(SynchronousTestCase):
    """gatehouse's own imports."""

    def test_no_cycle(self) -> None:
        """No module of gatehouse imports itself through other modules."""
        runtime, _ = gatehouse_graph()
        self.assertEqual(cycles(runtime), [])

    def test_core_never_imports_a_protocol(self) -> None:
        """
        Outside C{gatehouse.protocols.*}, nothing imports a protocol package
        (not even for type checking): adapters are found by name.
        """
        self.assertEqual(core_imports_of_protocols(*gatehouse_graph()), [])

    def test_graph_sees_the_package(self) -> None:
        """
        The graph is not vacuous: it has the known edges, function-level
        ones included.
        """
        runtime, _ = gatehouse_graph()
        self.assertIn("gatehouse.session", runtime)
        self.assertIn("gatehouse.policy", runtime["gatehouse.session"])
        self.assertIn("gatehouse.protocols", runtime["gatehouse.config.load"])
        # A function-level import (the session's masker).
        self.assertIn("gatehouse.policy.masking", runtime["gatehouse.session"])
        self.assertIn(
            "gatehouse.policy", runtime["gatehouse.protocols.postgres.commands"]
        )


class CheckerTests(SynchronousTestCase):
    """The checks fail on the mistakes they are for, in a made-up package."""

    def package(self, files: dict[str, str]) -> Path:
        root = Path(self.mktemp()) / "pkg"
        for name, text in {"__init__.py": "", **files}.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    def test_cycle_through_function_import(self) -> None:
        """A circle closed by an import inside a function is found."""
        root = self.package(
            {
                "config.py": "def load():\n    from pkg.policy import rules\n",
                "policy/__init__.py": "",
                "policy/rules.py": "from pkg import config\n",
            }
        )
        runtime, _ = import_graph(root, "pkg")
        self.assertEqual(cycles(runtime), [["pkg.config", "pkg.policy.rules"]])

    def test_cycle_relative(self) -> None:
        """Relative imports are resolved; a longer circle is found whole."""
        root = self.package(
            {
                "a.py": "from . import b\n",
                "b.py": "from .c import thing\n",
                "c.py": "import pkg.a\nthing = 1\n",
                "d.py": "import pkg.a\n",
            }
        )
        runtime, _ = import_graph(root, "pkg")
        self.assertEqual(cycles(runtime), [["pkg.a", "pkg.b", "pkg.c"]])

    def test_type_checking_is_no_cycle(self) -> None:
        """An import only type checkers run closes no circle."""
        root = self.package(
            {
                "a.py": "from typing import TYPE_CHECKING\n"
                "import pkg.b\n"
                "if TYPE_CHECKING:\n    from pkg.b import x\n",
                "b.py": "import typing\nif typing.TYPE_CHECKING:\n    import pkg.a\n"
                "else:\n    pass\nx = 1\n",
            }
        )
        runtime, typing = import_graph(root, "pkg")
        self.assertEqual(cycles(runtime), [])
        self.assertEqual(typing["pkg.b"], {"pkg.a"})

    def test_core_importing_a_protocol(self) -> None:
        """A core module importing a protocol package is reported."""
        root = self.package(
            {
                "protocols/__init__.py": "",
                "protocols/pg/__init__.py": "",
                "protocols/pg/adapter.py": "from pkg import session\n",
                "session.py": "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from pkg.protocols.pg.adapter import A\n",
                "service.py": "from pkg.protocols import get\n",
            }
        )
        found = core_imports_of_protocols(*import_graph(root, "pkg"), "pkg.protocols")
        self.assertEqual(
            found,
            [
                "pkg.session -> pkg.protocols.pg",
                "pkg.session -> pkg.protocols.pg.adapter",
            ],
        )

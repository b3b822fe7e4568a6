"""hmnumba's modules import one another without a cycle (DESIGN section 1:
imports run one way, downward), lazy imports inside functions included.

The graph is read from the source with ``ast``: every ``import`` and
``from ... import`` anywhere in a module (at the top, inside a function, under
``if TYPE_CHECKING:``) is an edge to the hmnumba module it names; ``from
package import name`` is an edge to ``package.name`` when that is a module,
else to the package. Doctest examples are strings, not imports, and do not
count.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hmnumba"


def module_files(root=ROOT):
    """``{module name: path}`` of every ``.py`` file under ``root``."""
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _package_of(name, path):
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(name, path, modules):
    """The hmnumba modules that module ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from its package, up level - 1
                package = _package_of(name, path).split(".")
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        else:
            continue
        for target in targets:
            # "import a.b.c" names a.b.c; an unknown dotted tail is an attribute.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("hmnumba") and target != name:
                found.add(target)
    return found


def import_graph(root=ROOT):
    modules = module_files(root)
    return {name: imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One cycle as a list ``[a, b, ..., a]``, or None (depth-first search)."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "hmnumba.kernels.compress" in graph["hmnumba.construct"]
    # a lazy import inside a function counts
    assert "hmnumba.kernels.products_cuda" in graph["hmnumba.hmatrix"]


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_imports_have_no_cycle():
    """Lazy imports included, with no exception."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_io_sits_below_hmatrix():
    """``io`` reads and writes the storage value; ``hmatrix`` wraps it."""
    graph = import_graph()
    assert "hmnumba.hmatrix" not in graph["hmnumba.io"]
    assert "hmnumba.storage" in graph["hmnumba.io"]
    assert "hmnumba.io" in graph["hmnumba.hmatrix"]


@pytest.mark.parametrize("name", sorted(n for n in module_files()
                                        if n.startswith("hmnumba.kernels.")))
def test_kernel_files_import_only_kernel_files(name):
    """``kernels/`` is the bottom layer: its files import nothing above it."""
    above = {m for m in import_graph()[name] if not m.startswith("hmnumba.kernels")}
    assert not above, f"{name} imports {sorted(above)}"


def test_h2_sits_above_h():
    """``H2Matrix.from_hmatrix`` and ``to_hmatrix`` convert between the two
    formats from the H^2 side; the H layer never reaches up."""
    graph = import_graph()
    for module in ("hmnumba.hmatrix", "hmnumba.construct", "hmnumba.io"):
        assert not any(m.startswith("hmnumba.h2") for m in graph[module]), module

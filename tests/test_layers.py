"""The tree shows the design: packages in layers, each importing only from the ones before it.

Read from the source with :mod:`ast`, not by importing: an import inside a
function counts as much as one at the top, since it runs all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chainwatch"

# In data-flow order; the README's architecture section says what each is for.
# errors, printable and palette are shared by every layer; config is read by
# everything from the sources on and itself reads only files and policy settings.
LAYERS = (
    "errors",
    "printable",
    "palette",
    "files",
    "x509",
    "policy",
    "clients",
    "config",
    "sources",
    "state",
    "consumers",
    "agent",
    "cli",
)
LARGEST_MODULE_LINES = 700


def _modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(path: Path, name: str) -> set[str]:
    """The chainwatch modules ``path`` (module ``name``) imports, leaving out type-checking-only ones."""
    tree = ast.parse(path.read_text())
    checking_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in checking_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chainwatch"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("chainwatch")}
    modules = _modules()
    return {module for module in found if module in modules and module != name}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer() -> None:
    loose = [name for name in _modules() if name.count(".") and _layer(name) is None]
    assert loose == ["chainwatch.__main__"]


def test_each_layer_imports_only_from_the_layers_before_it() -> None:
    climbing = []
    for name, path in _modules().items():
        mine = _layer(name)
        for imported in _imports(path, name):
            theirs = _layer(imported)
            if mine and theirs and LAYERS.index(theirs) > LAYERS.index(mine):
                climbing.append(f"{name} ({mine}) imports {imported} ({theirs})")
    assert climbing == []


def test_no_module_imports_itself_back_through_another() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(path, name) if m in modules and m.count(".") > 1} for name, path in modules.items()
    }
    # Package __init__ files are docstrings only, so edges through them are none.
    cycles = []

    def visit(node: str, trail: tuple[str, ...]) -> None:
        for following in sorted(graph.get(node, ())):
            if following in trail:
                cycles.append(" → ".join((*trail[trail.index(following) :], following)))
            elif following not in done:
                visit(following, (*trail, following))
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, (start,))
    assert cycles == []


def test_packages_say_what_they_own_and_re_export_nothing() -> None:
    # An __init__ that imported its modules would load all of them for one:
    # `chainwatch status` would pay for cryptography and the agent.
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init} has no docstring"
        assert [type(node) for node in tree.body] == [ast.Expr], f"{init} holds more than its docstring"


def test_no_module_is_longer_than_a_reader_can_hold() -> None:
    long = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text().splitlines())) > LARGEST_MODULE_LINES
    }
    assert long == {}

"""The folders are the layers: imports point down them, never up, and no import cycle exists.

Read from the source (every import, type-only ones included), so a move that breaks the
layering fails here with the offending import named, before anyone has to draw a diagram.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tap_confluence

ROOT = Path(tap_confluence.__file__).parent

#: Top-level folder or module of tap_confluence -> its layer; a module may import its own
#: folder and anything in a lower layer. The order is docs/ARCHITECTURE.md's.
LAYERS = {
    "__main__": 7,
    "tap": 6,
    "auth_cli": 6,
    "streams": 5,
    "http": 4,
    "site": 3,
    "settings": 2,
    "records": 1,
    "oauth": 1,
    "errors": 0,
    "redact": 0,
    "sdk_compat": 0,
    "schemas": 0,
    "__init__": 0,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every tap_confluence module ``path`` imports, at run time or for types only."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from tap_confluence.x import y` may name the module tap_confluence.x.y.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("tap_confluence")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else 0


def test_every_top_level_part_has_a_layer() -> None:
    names = {p.stem for p in ROOT.glob("*.py")} | {
        p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()
    }
    assert names - set(LAYERS) == set(), "give the new folder or module a layer above"


def test_no_import_points_up_a_layer() -> None:
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
        or (
            layer(target) == layer(module)
            and module.split(".")[1:2] != target.split(".")[1:2]
            and target != "tap_confluence"
        )
    ]
    assert upward == []


def test_auth_cli_never_imports_the_tap() -> None:
    cli = {m: t for m, t in graph().items() if m.startswith("tap_confluence.auth_cli")}
    assert cli, "the auth CLI's modules are where this test looks"
    assert [m for m, targets in cli.items() if "tap_confluence.tap" in targets] == []


def test_no_import_cycle_not_even_a_type_only_one() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_streams_never_reach_each_other_or_the_tap_through_the_sdk() -> None:
    # A stream gets its SiteConnection; looking a sibling up in the tap's stream list
    # (``tap_of(self).streams[...]``) would tie streams together behind the layers' back.
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "streams").rglob("*.py")
        if "tap_of(" in path.read_text() or ".streams[" in path.read_text()
    ]
    assert offenders == []

"""The import graph: packages depend one way, and the sans-I/O protocol imports no trio.

protocol <- settings <- core <- daemon <- service <- cli, with api beside daemon: it
is given a ``core.control.Control`` by the service and imports nothing of the daemon.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src" / "mcrelay"
LAYERS = {
    "protocol": 0,
    "files": 0,
    "logs": 0,
    "sockets": 0,
    "settings": 1,
    "core": 2,
    "daemon": 3,
    "api": 3,
    "federation": 3,
    "client": 3,
    "service": 4,
    "cli": 5,
    "__main__": 6,
}
"""A package may import only from packages of a lower layer (and from itself)."""
MAX_MODULE_LINES = 650


def unit(module: str) -> str:
    """``mcrelay.daemon.legacy.profile`` -> ``daemon``; ``mcrelay`` itself -> ``mcrelay``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    """For each module of src/mcrelay, the mcrelay modules it imports (at any depth)."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found[module].add(node.module)
            elif isinstance(node, ast.Import):
                found[module].update(alias.name for alias in node.names)
    return found


def test_packages_import_only_downwards() -> None:
    wrong = []
    for module, names in imports().items():
        source = unit(module)
        for name in names:
            if not name.startswith("mcrelay.") or unit(name) == source:
                continue
            target = unit(name)
            if LAYERS[target] >= LAYERS[source]:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_package_has_a_layer() -> None:
    units = {unit(module) for module in imports()} - {"mcrelay"}
    assert units <= set(LAYERS), units - set(LAYERS)


@pytest.mark.parametrize("forbidden", ["trio", "socket", "time", "asyncio"])
def test_the_protocol_is_sans_io(forbidden: str) -> None:
    for module, names in imports().items():
        if unit(module) == "protocol":
            assert not any(n == forbidden or n.startswith(f"{forbidden}.") for n in names), module


def test_no_module_is_too_long() -> None:
    long = {
        str(path.relative_to(SRC)): lines
        for path in SRC.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, long

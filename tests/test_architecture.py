"""The layer table of docs/architecture.md holds for every module, and covers every package."""

import ast
import re
import sys
from pathlib import Path

import craft_vla
from craft_vla.cli.main import COMMANDS

ROOT = Path(craft_vla.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
CRAFT_THIRD_PARTY = {"torch", "numpy", "safetensors"}


def layer_table() -> dict[str, set[str]]:
    """package -> the craft-vla packages it may import, read from the document's table."""
    table = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+)`", cells[0]) if len(cells) == 3 else None
        if match:
            allowed = cells[2].split("(")[0].strip()
            table[match.group(1)] = set() if allowed == "none" else {a.strip() for a in allowed.split(",")}
    return table


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_package_is_in_the_table():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert set(layer_table()) == packages
    assert {p.name for p in ROOT.glob("*.py")} == {"__init__.py"}  # no module outside a layer


def test_every_module_imports_only_the_packages_its_layer_allows():
    table = layer_table()
    wrong = []
    for package, allowed in table.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[0] == "craft_vla" and len(parts) > 1 and parts[1] not in allowed | {package}:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_craft_imports_only_torch_and_the_standard_library():
    for path in (ROOT / "craft").glob("*.py"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top in {"craft_vla"} | CRAFT_THIRD_PARTY or top in sys.stdlib_module_names, (
                f"{path.name}: {name}"
            )
    numpy_users = {
        p.name
        for p in (ROOT / "craft").glob("*.py")
        if {"numpy", "safetensors"} & {n.split(".")[0] for n in imported_modules(p)}
    }
    assert numpy_users <= {"cache.py"}, numpy_users


def test_every_command_names_an_existing_config_and_function():
    import importlib

    for name, command in COMMANDS.items():
        for reference in (command.config, command.run):
            module, attribute = reference.split(":")
            assert hasattr(importlib.import_module(module), attribute), f"{name}: {reference}"


def test_the_tests_read_no_file_outside_the_repository():
    """A clone tests everything it ships: fixtures live in tests/fixtures, not in ../shared beside it."""
    tests = Path(__file__).resolve().parent
    pattern = re.compile(r"parents\[[3-9]\]|[\"']shared[\"']")  # a path above the repository, or ../shared
    outside = [
        p.name for p in tests.rglob("*.py") if p != Path(__file__).resolve() and pattern.search(p.read_text())
    ]
    assert outside == []

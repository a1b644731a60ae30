"""craft/ is model-agnostic: it imports nothing from the rest of the package (ARCHITECTURE.md)."""

import ast
from pathlib import Path

import craft_vla.craft

ALLOWED_THIRD_PARTY = {"torch", "numpy", "safetensors"}  # numpy + safetensors: the anchor cache format only


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_craft_imports_only_itself_torch_and_the_standard_library():
    import sys

    root = Path(craft_vla.craft.__file__).parent
    for path in root.glob("*.py"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "craft_vla":
                assert name.startswith("craft_vla.craft"), f"{path.name} imports {name}"
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"
    numpy_users = {p.name for p in root.glob("*.py") if {"numpy", "safetensors", "safetensors.torch"} & imported_modules(p)}
    assert numpy_users <= {"cache.py"}, numpy_users

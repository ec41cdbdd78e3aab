"""The layers import only downwards: configuration <- commands <- operations <- host <- cli (see docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sum_tasks"
ALLOWED = {
    "configuration": {"configuration"},
    "commands": {"configuration", "commands"},
    "operations": {"configuration", "commands", "operations"},
    "host": {"configuration", "commands", "operations", "host"},
    "cli": {"configuration", "commands", "operations", "host", "cli"},
}


def imported_layers(path: Path) -> set[str]:
    """The sum_tasks sub-packages `path` imports, relative or absolute."""
    layer = path.relative_to(PACKAGE).parts[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(layer)
            elif node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and (node.module or "").startswith("sum_tasks."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("sum_tasks.")}
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_below_itself(layer):
    for path in sorted((PACKAGE / layer).glob("*.py")):
        assert imported_layers(path) <= ALLOWED[layer], f"{path.name} imports {imported_layers(path) - ALLOWED[layer]}"


def test_the_layers_are_the_package():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == set(ALLOWED) | {"testing"}

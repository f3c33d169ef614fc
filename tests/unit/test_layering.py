"""Dependencies point inward: the domain needs nothing, the service no adapter or door."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chatms"

# (layer, what it may not import)
ROOT = ("chatms.app", "chatms.builder", "chatms.storage")  # the composition root
RULES = {
    "domain": ("chatms.service", "chatms.adapters", "chatms.entrypoints", "chatms.config",
               "chatms.observability", *ROOT),
    "service": ("chatms.adapters", "chatms.entrypoints", "chatms.observability", *ROOT),
    "adapters": ("chatms.entrypoints", "chatms.observability", *ROOT),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_only_inward(layer: str) -> None:
    """No module of the layer imports a layer further out."""
    broken = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in sorted(imported(path))
        if name.startswith(RULES[layer])
    ]
    assert broken == []


def test_domain_uses_the_standard_library_only() -> None:
    """The domain imports nothing but the standard library and itself."""
    outside = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted((PACKAGE / "domain").rglob("*.py"))
        for name in sorted(imported(path))
        if name.split(".")[0] not in sys.stdlib_module_names
        and not name.startswith("chatms.domain")
    ]
    assert outside == []

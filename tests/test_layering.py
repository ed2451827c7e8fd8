"""The layering rules: ``audit/`` and ``agent/`` never import ``broker/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", ["audit", "agent"])
def test_package_does_not_import_broker(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    offenders = [str(f.relative_to(ROOT)) for f in files if "broker" in _imports(f)]
    assert offenders == [], f"{package}/ must not import broker/: {offenders}"


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from broker.app import create_app\nimport json\n")
    assert "broker" in _imports(sample)

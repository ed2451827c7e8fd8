"""The import contracts (importlinter.toml, checked by `make contracts`) cover all of broker/.

A layers contract only constrains the modules it names: a new module left out of it could
import anything. Every module of broker/ must be named by a layer, itself or through the
package it is in (package ``__init__`` files that only name the package are exempt).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _layers() -> list[set[str]]:
    config = tomllib.loads((ROOT / "importlinter.toml").read_text(encoding="utf-8"))
    (layers,) = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"
    ]
    return [{name.strip() for name in layer.replace("|", ":").split(":")} for layer in layers]


def _modules() -> list[str]:
    found = []
    for path in sorted((ROOT / "broker").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "migrations" in parts:  # Alembic's scripts: loaded by Alembic, not imported
            continue
        if parts[-1] == "__init__":
            continue
        found.append(".".join(parts))
    return found


def _named(module: str, names: set[str]) -> bool:
    return any(module == n or module.startswith(n + ".") for n in names)


def test_every_broker_module_stands_in_a_layer() -> None:
    names = set().union(*_layers())
    missing = [m for m in _modules() if not _named(m, names)]
    assert missing == [], f"add these to a layer in importlinter.toml: {missing}"


def test_no_module_stands_in_two_layers() -> None:
    layers = _layers()
    for module in _modules():
        found = [i for i, layer in enumerate(layers) if _named(module, layer)]
        assert len(found) <= 1, (module, found)

"""Templates and static files of the broker's pages (front-end libraries come from npm)."""

from pathlib import Path

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

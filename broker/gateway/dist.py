"""The agent as a wheel of its own, so a device installs it from the broker with pip.

``supportbroker_agent-<version>-py3-none-any.whl`` holds only the ``agent`` package (its
``.py`` files, read from where this broker runs it) and a ``supportbroker-agent`` console
script; it requires only what ``agent/`` imports (:data:`AGENT_REQUIREMENTS`), with the version
floors the broker's own distribution declares, so the two never disagree. The broker's code,
the audit library and the web assets are not in it.

The wheel is built in memory on the first request and kept for the life of the process (the
agent's code cannot change under a running broker). Its bytes are the same for the same code:
every member has a fixed time stamp and the members are sorted, so a digest shown on one
broker matches the file another one serves. The format is the wheel specification's (PEP 427:
``WHEEL``, ``METADATA``, ``entry_points.txt`` and a ``RECORD`` of SHA-256 digests), which pip
checks on install.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from broker.errors import NotFound

# The distributions agent/ imports (tests/gateway/test_dist.py compares this with the
# imports it finds in agent/): nothing of the broker's server stack.
AGENT_REQUIREMENTS = ("asyncssh", "cryptography", "pydantic", "pydantic-settings", "structlog")
DIST_NAME = "supportbroker_agent"
ENTRY_POINT = "supportbroker-agent = agent.cli:main"
REQUIRES_PYTHON = ">=3.11"
_STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


@dataclass(frozen=True)
class AgentWheel:
    filename: str
    version: str
    content: bytes
    requirements: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def _agent_dir() -> Path:
    """Where the ``agent`` package's sources are, found without importing it."""
    spec = importlib.util.find_spec("agent")
    if spec is None or not spec.submodule_search_locations:
        raise NotFound("the agent package is not installed with this broker")
    return Path(next(iter(spec.submodule_search_locations)))


def _version(source: Path) -> str:
    found = re.search(r'^__version__ = "([^"]+)"', (source / "__init__.py").read_text(), re.M)
    if found is None:
        raise NotFound("the agent package states no __version__")
    return found.group(1)


def requirements() -> tuple[str, ...]:
    """The agent's requirements with the floors of the broker's distribution (bare names when
    the broker runs from a source tree without its metadata)."""
    try:
        declared = importlib.metadata.requires("supportbroker") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
    floors: dict[str, str] = {}
    for line in declared:
        if ";" in line:  # an extra's requirement (dev tools): never the agent's
            continue
        name = re.split(r"[\s\[<>=!~]", line, maxsplit=1)[0]
        floors[name.lower()] = re.sub(r"\[[^]]*\]", "", line).replace(" ", "")
    return tuple(floors.get(name, name) for name in AGENT_REQUIREMENTS)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build(source: Path | None = None) -> AgentWheel:
    """Build the agent's wheel from the package at ``source`` (default: the one installed)."""
    source = source or _agent_dir()
    version = _version(source)
    needs = requirements()
    info = f"{DIST_NAME}-{version}.dist-info"
    members: dict[str, bytes] = {}
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        members["agent/" + path.relative_to(source).as_posix()] = path.read_bytes()
    metadata = [
        "Metadata-Version: 2.1",
        "Name: supportbroker-agent",
        f"Version: {version}",
        "Summary: The supportbroker end-user agent (dials out to the broker's SSH gateway)",
        f"Requires-Python: {REQUIRES_PYTHON}",
        *(f"Requires-Dist: {need}" for need in needs),
    ]
    members[f"{info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    members[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: supportbroker\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    members[f"{info}/entry_points.txt"] = f"[console_scripts]\n{ENTRY_POINT}\n".encode()
    record = [f"{name},{_digest(data)},{len(data)}" for name, data in members.items()]
    members[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in members.items():
            member = zipfile.ZipInfo(name, date_time=_STAMP)
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            wheel.writestr(member, data)
    filename = f"{DIST_NAME}-{version}-py3-none-any.whl"
    return AgentWheel(filename, version, out.getvalue(), needs)


@functools.cache
def served() -> AgentWheel:
    """The wheel this broker serves: built on first use, then kept (see the module's note)."""
    return build()


def wheel_named(filename: str) -> AgentWheel:
    wheel = served()
    if filename != wheel.filename:
        raise NotFound(f"no such file; the agent is {wheel.filename}")
    return wheel


def download_path() -> str:
    """The wheel's path on this broker (below its base URL)."""
    return f"/api/v1/agent/dist/{served().filename}"

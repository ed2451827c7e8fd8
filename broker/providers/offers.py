"""What a session may ask of its provider, and what of it is recorded, told the same way
everywhere: the request form, the API, the consent page and the technician's pages.

Each provider declares its :class:`~broker.providers.base.Offer` on its class; this module
reads it (:func:`broker.providers.registry.offer_of`), refuses a request for a capability
the provider cannot give, and says truthfully what is recorded: the content (the agent's
terminal) or only the events (who connected, when, what was opened).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.errors import NotFound, ProviderError, ValidationFailed
from broker.providers import registry
from broker.providers.base import CAPABILITIES, Offer
from broker.sessions.repository import SessionRecord
from broker.sessions.schemas import RecordingOut, SessionOut

# The technician's words (request form, session page).
TECHNICIAN_WORDS = {
    "view": "See the screen",
    "control": "Use mouse and keyboard",
    "shell": "Run commands (terminal)",
    "files": "Transfer files",
    "forward": "Forward a TCP port (e.g. VNC, RDP)",
}
# The end user's words (consent page): what the technician will be able to do.
END_USER_WORDS = {
    "view": "see your screen",
    "control": "use your mouse and keyboard",
    "shell": "run commands on your computer",
    "files": "copy files to and from your computer",
    "forward": "connect to a network service on your computer (a port such as remote desktop)",
}
# What "recorded" means for each capability whose content we record.
RECORDED_WORDS = {
    "view": "the screen",
    "control": "the screen",
    "shell": "the terminal (everything typed and shown)",
    "files": "the files transferred",
    "forward": "the forwarded traffic",
}


def ordered(capabilities: Iterable[str]) -> list[str]:
    """In the order people read them (screen, input, terminal, files, ports)."""
    chosen = set(capabilities)
    return [c for c in CAPABILITIES if c in chosen]


def offered(provider: str) -> list[str]:
    return ordered(registry.offer_of(provider).capabilities)


def require_offered(provider: str, capabilities: Iterable[str]) -> None:
    """Refuse (422) capabilities ``provider`` cannot give, saying which it can."""
    offer = registry.offer_of(provider)
    missing = ordered(set(capabilities) - offer.capabilities)
    if missing:
        raise ValidationFailed(
            f"capabilities: provider {provider!r} cannot give {', '.join(missing)}; "
            f"it offers {', '.join(ordered(offer.capabilities))}"
        )


def for_form(provider: str) -> dict[str, list[str]]:
    """What the request form shows for ``provider``'s devices: the rights it gives and those
    it records; nothing for a provider this broker does not know (asking would be refused)."""
    try:
        offer = registry.offer_of(provider)
    except (NotFound, ProviderError):
        return {"gives": [], "recorded": []}
    return {"gives": ordered(offer.capabilities), "recorded": ordered(offer.recorded)}


@dataclass(frozen=True)
class Recording:
    """The truth about a session's recording: whose content we record (``content``), and
    for which capabilities only the events are kept (``events_only``)."""

    content: list[str]
    events_only: list[str]

    @property
    def recorded(self) -> bool:
        return bool(self.content)

    @property
    def summary(self) -> str:
        """One line for the technician and the API."""
        parts = []
        if self.content:
            kept = dict.fromkeys(RECORDED_WORDS[c] for c in self.content)
            parts.append(f"recorded: {', '.join(kept)}")
        if self.events_only:
            words = ", ".join(self.events_only)
            parts.append(f"events only (who, when, what was opened) for {words}")
        text = "; ".join(parts) or "events only"
        return text[:1].upper() + text[1:]

    def for_end_user(self) -> str:
        """What the end user reads on the consent page."""
        if not self.content:
            return (
                "No — what is shown on your computer is not recorded. Who connected, when and "
                "for how long is kept in a tamper-evident log."
            )
        kept = ", ".join(dict.fromkeys(RECORDED_WORDS[c] for c in self.content))
        text = f"Yes — {kept} is recorded and kept in a tamper-evident log."
        if self.events_only:
            others = "; ".join(END_USER_WORDS[c] for c in self.events_only)
            text += f" Not recorded, only logged as events: {others}."
        return text


def session_out(record: SessionRecord) -> SessionOut:
    """A session as the API shows it, with what is recorded of it."""
    s = record.session
    return SessionOut.of(record, recording_out(s.provider, s.capabilities))


def recording_out(provider: str, capabilities: Iterable[str]) -> RecordingOut:
    """The API's view of :func:`recording_of`."""
    found = recording_of(provider, capabilities)
    return RecordingOut(
        recorded=found.recorded,
        content=found.content,
        events_only=found.events_only,
        summary=found.summary,
    )


def recording_of(provider: str, capabilities: Iterable[str]) -> Recording:
    try:
        offer = registry.offer_of(provider)
    except (NotFound, ProviderError):
        # A provider no longer installed: we cannot claim to have recorded anything.
        offer = Offer(frozenset(CAPABILITIES))
    chosen = ordered(capabilities)
    return Recording(
        content=[c for c in chosen if c in offer.recorded],
        events_only=[c for c in chosen if c not in offer.recorded],
    )

"""The catalogue of audit events: every event type the broker seals, with what it means.

One name per fact, ``domain.action``: an auditor reads them on a timeline, a SIEM matches
them. :func:`broker.evidence.service.record_event` takes only these members and refuses any
other name, so nothing reaches the log that the catalogue (and docs/AUDIT.md, which a test
keeps equal to it) does not explain. The audit library writes three recording events and the
erasure marker itself (``audit.recording``, ``audit.store``): they are members too, so the
catalogue covers the whole log.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """An audit event type: the value is the name sealed in the record's header."""

    meaning: str

    def __new__(cls, value: str, meaning: str) -> EventType:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    # A session's life (``session.<state>`` is written by every state change).
    session_requested = "session.requested", "a technician asked for a remote session"
    session_awaiting_approval = (
        "session.awaiting_approval",
        "the device group's policy asks a second person to approve the request first",
    )
    approval_granted = (
        "approval.granted",
        "a second person (technician or supervisor of the group) approved a request",
    )
    approval_denied = "approval.denied", "a second person denied a request"
    session_awaiting_consent = (
        "session.awaiting_consent",
        "the request passed policy; the end user is being asked",
    )
    session_approved = "session.approved", "consent was given; the time limit runs from now"
    session_active = "session.active", "the technician connected: the session started"
    session_ended = "session.ended", "the session ended (technician, admin or time limit)"
    session_denied = "session.denied", "the end user refused the request"
    session_expired = "session.expired", "consent or the approved window ran out unused"
    session_revoked = "session.revoked", "an admin, the technician or the end user withdrew it"
    session_failed = "session.failed", "the session could not go on (provider, agent, lock)"
    session_rated = "session.rated", "the end user rated an ended session"
    session_expert_invited = (
        "session.expert_invited",
        "the technician invited a colleague to join the session",
    )
    session_technician_attached = (
        "session.technician_attached",
        "the technician attached to an already started session",
    )
    session_expert_joined = "session.expert_joined", "an invited expert joined the terminal"
    session_supervisor_watching = (
        "session.supervisor_watching",
        "an admin, or a supervisor of the device's group, watches read-only",
    )
    session_forward_opened = "session.forward_opened", "a TCP port forward to the device opened"
    session_desktop_opened = (
        "session.desktop_opened",
        "a viewer's screen connection opened (its mode, whether input passes)",
    )
    session_desktop_closed = (
        "session.desktop_closed",
        "a viewer's screen connection ended (why, input dropped, any violation)",
    )
    session_channel_refused = (
        "session.channel_refused",
        "a shell or forward was refused by the broker's or the agent's rules",
    )
    session_file_transfer = (
        "session.file_transfer",
        "a file moved to or from the device, or failed to (the broker's and the device's SHA-256)",
    )

    # The end user's consent.
    consent_requested = "consent.requested", "a consent request (code and link) was issued"
    consent_decided = "consent.decided", "the consent receipt: who decided what, from where, until"
    consent_receipt = "consent.receipt", "the device's agent signed the end user's decision"
    consent_code_rejected = "consent.code_rejected", "a wrong or stale consent code was entered"
    consent_locked = "consent.locked", "too many wrong codes: the consent request is dead"
    consent_lockout = "consent.lockout", "a client entered too many wrong codes: locked out"
    consent_code_paused = (
        "consent.code_paused",
        "wrong codes for a request: entering its code waits (growing back-off)",
    )
    policy_denied = "policy.denied", "a session request broke a rule (names the rule)"

    # The end user's own history and the device owner's notices (README, "History").
    history_viewed = (
        "history.viewed",
        "an end user opened a device's history (or a receipt) from a consent request's link",
    )
    owner_notified = (
        "owner.notified",
        "the device owner was mailed the facts of an unattended session that ended",
    )

    # Tickets and ticket systems.
    ticket_created = "ticket.created", "a ticket became known (API, connector or as typed)"
    ticket_updated = "ticket.updated", "a ticket's subject, state or assignee changed"
    ticket_closed = "ticket.closed", "a ticket closed: its open sessions end"
    ticket_reopened = "ticket.reopened", "a closed ticket was opened again"
    ticket_reassigned = "ticket.reassigned", "the ticket system gave the ticket to someone else"
    ticket_merged = "ticket.merged", "the ticket system merged the ticket into another one"
    ticket_access_denied = (
        "ticket.access_denied",
        "a ticket-system token reached for another system's tickets",
    )
    ticket_erased = "ticket.erased", "the ticket's data key was destroyed (crypto-erasure)"
    connector_webhook_rejected = (
        "connector.webhook_rejected",
        "an inbound webhook was refused (signature, freshness, replay or unreadable)",
    )

    # Remote-access providers.
    provider_prepared = "provider.prepared", "the provider granted the approved access"
    provider_prepare_failed = "provider.prepare_failed", "the provider could not grant access"
    provider_ended = "provider.ended", "the provider withdrew the access it had granted"
    provider_end_pending = (
        "provider.end_pending",
        "withdrawing provider access failed; it is retried",
    )
    provider_connection = "provider.connection", "a connection the provider recorded for a session"
    provider_alert = "provider.alert", "a provider connection outside any approved session"
    provider_devices_synced = "provider.devices_synced", "devices were imported from a provider"

    # Recordings (the first three are written by audit.recording).
    recording_started = (
        "recording.started",
        "a terminal or screen recording began (asciicast header or ServerInit)",
    )
    recording_chunk = (
        "recording.chunk",
        "a sealed chunk of terminal output or of the screen's RFB stream",
    )
    recording_ended = "recording.ended", "a terminal or screen recording ended (size and digest)"
    recording_gap = (
        "recording.gap",
        "a recording stopped short of its end (a chunk not sealed, its replica died): it fails",
    )
    recording_viewed = "recording.viewed", "someone replayed a recording"
    playback_requested = (
        "playback.requested",
        "an auditor asked a second auditor to open a replay or a plaintext export",
    )
    playback_approved = (
        "playback.approved",
        "a second auditor opened a replay or plaintext export to the one who asked, for a time",
    )
    playback_denied = "playback.denied", "a second auditor denied a replay or plaintext export"
    playback_policy_set = (
        "playback.policy_set",
        "a ticket's own dual-control switch was turned on (an auditor) or off (an admin)",
    )
    file_kept = "file.kept", "a sealed piece of a transferred file the group keeps (encrypted)"
    file_viewed = "file.viewed", "an auditor downloaded a kept file, with a reason"

    # The audit log itself.
    audit_timeline_viewed = "audit.timeline_viewed", "someone read a ticket's timeline"
    audit_verification_requested = (
        "audit.verification_requested",
        "an auditor asked for a whole-log verification now",
    )
    evidence_exported = "evidence.exported", "an evidence bundle was exported"
    audit_checkpoint_timestamped = (
        "audit.checkpoint_timestamped",
        "a time-stamping authority (RFC 3161) vouched for when a published checkpoint existed",
    )
    audit_timestamp_failed = (
        "audit.timestamp_failed",
        "the time-stamping authority could not be reached or gave no valid token; retried later",
    )

    # People, tokens and sign-in.
    auth_login = "auth.login", "a user signed in"
    auth_login_failed = "auth.login_failed", "a sign-in failed (password, second factor, SSO)"
    auth_lockout = "auth.lockout", "too many failed sign-ins: the account or client waits"
    auth_unlocked = "auth.unlocked", "an admin cleared the failed sign-in counters of an account"
    security_refused = (
        "security.refused",
        "requests refused by a throttle, counted per source and minute",
    )
    auth_logout = "auth.logout", "a user signed out"
    auth_sso_verified = "auth.sso_verified", "an OIDC provider vouched for a user"
    auth_password_changed = "auth.password_changed", "a user changed their password"
    auth_password_change_failed = (
        "auth.password_change_failed",
        "a password change was refused (wrong current password)",
    )
    auth_totp_enabled = "auth.totp_enabled", "a user turned on their second factor"
    auth_totp_disabled = "auth.totp_disabled", "a user turned off their second factor"
    auth_totp_reset = "auth.totp_reset", "an admin removed a user's second factor"
    auth_token_used = "auth.token_used", "an API token authenticated a request"
    auth_token_rejected = "auth.token_rejected", "an unknown, revoked or expired token was shown"
    auth_csrf_rejected = "auth.csrf_rejected", "a browser request lacked a valid CSRF token"
    auth_permission_denied = "auth.permission_denied", "a caller lacked the scope a route needs"
    user_created = "user.created", "an account was created (by an admin, or the first admin)"
    user_updated = "user.updated", "an account changed (role, name, limits, disabled)"
    user_password_reset = "user.password_reset", "an admin set a one-time password"
    token_created = "token.created", "an API token was issued"
    token_revoked = "token.revoked", "an API token was revoked"

    # Devices and the built-in agent.
    device_created = "device.created", "a device was registered"
    device_updated = "device.updated", "a device was renamed or moved"
    device_deleted = "device.deleted", "a device was removed"
    device_retired = "device.retired", "a device was retired and its agent key revoked"
    device_group_created = "device_group.created", "a device group was created"
    device_group_updated = "device_group.updated", "a device group's policy changed"
    device_group_member_added = "device_group.member_added", "a technician joined a device group"
    device_group_member_removed = (
        "device_group.member_removed",
        "a technician left a device group",
    )
    agent_token_created = "agent.token_created", "an enrollment token for agents was issued"
    agent_enrolled = "agent.enrolled", "a device's agent enrolled with its key"
    agent_enrollment_refused = "agent.enrollment_refused", "an agent's enrollment was refused"


_BY_NAME: dict[str, EventType] = {member.value: member for member in EventType}


def event_named(name: str) -> EventType | None:
    """The catalogue's member for ``name`` (None when the catalogue has no such event)."""
    return _BY_NAME.get(name)


# What an auditor looks for first among the log's own (``_system``) events: refusals,
# failed sign-ins and codes, lockouts and alarms.
SECURITY_EVENTS = frozenset(
    {
        EventType.consent_code_rejected,
        EventType.consent_locked,
        EventType.consent_lockout,
        EventType.consent_code_paused,
        EventType.policy_denied,
        EventType.ticket_access_denied,
        EventType.connector_webhook_rejected,
        EventType.auth_login_failed,
        EventType.auth_lockout,
        EventType.auth_unlocked,
        EventType.security_refused,
        EventType.auth_password_change_failed,
        EventType.auth_token_rejected,
        EventType.auth_csrf_rejected,
        EventType.auth_permission_denied,
        EventType.agent_enrollment_refused,
        EventType.provider_alert,
    }
)


def event_words(name: str) -> str:
    """An event type as a reader says it ("The end user refused the request"); the name
    itself for a type the catalogue does not know."""
    found = event_named(name)
    return name if found is None else found.meaning[:1].upper() + found.meaning[1:]

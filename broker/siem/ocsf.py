"""Each catalogue event's OCSF class (Open Cybersecurity Schema Framework 1.x), for SIEM rules.

The class travels with every exported event (``ocsf_class_uid``) so a SIEM can route it
without its own table; docs/SIEM.md shows the same mapping and a test keeps both complete.
"""

from __future__ import annotations

from broker.evidence.events import EventType as E

CLASSES: dict[int, str] = {
    2004: "Detection Finding",
    3001: "Account Change",
    3002: "Authentication",
    3003: "Authorize Session",
    3004: "Entity Management",
    3005: "User Access Management",
    3006: "Group Management",
    4001: "Network Activity",
    4009: "Email Activity",
    4010: "Network File Activity",
    4014: "Tunnel Activity",
    5001: "Device Inventory Info",
    6003: "API Activity",
    6005: "Datastore Activity",
}

_BY_CLASS: dict[int, tuple[E, ...]] = {
    # A remote session is an authorisation to reach a device: its whole life, consent and
    # second-person approval included.
    3003: (
        E.session_requested,
        E.session_awaiting_approval,
        E.approval_granted,
        E.approval_denied,
        E.session_awaiting_consent,
        E.session_approved,
        E.session_active,
        E.session_ended,
        E.session_denied,
        E.session_expired,
        E.session_revoked,
        E.session_failed,
        E.session_expert_invited,
        E.session_technician_attached,
        E.session_expert_joined,
        E.session_supervisor_watching,
        E.consent_requested,
        E.consent_decided,
        E.consent_receipt,
        E.policy_denied,
        E.playback_requested,
        E.playback_approved,
        E.playback_denied,
        E.auth_permission_denied,
    ),
    3002: (
        E.consent_code_rejected,
        E.consent_locked,
        E.consent_lockout,
        E.consent_code_paused,
        E.auth_login,
        E.auth_login_failed,
        E.auth_lockout,
        E.security_refused,
        E.auth_logout,
        E.auth_sso_verified,
        E.auth_token_used,
        E.auth_token_rejected,
        E.agent_enrollment_refused,
    ),
    3001: (
        E.auth_unlocked,
        E.auth_password_changed,
        E.auth_password_change_failed,
        E.auth_totp_enabled,
        E.auth_totp_disabled,
        E.auth_totp_reset,
        E.user_created,
        E.user_updated,
        E.user_password_reset,
        E.token_created,
        E.token_revoked,
    ),
    3004: (E.agent_token_created, E.playback_policy_set),
    # Access a provider grants and withdraws for a session.
    3005: (
        E.provider_prepared,
        E.provider_prepare_failed,
        E.provider_ended,
        E.provider_end_pending,
    ),
    3006: (
        E.device_group_created,
        E.device_group_updated,
        E.device_group_member_added,
        E.device_group_member_removed,
    ),
    4001: (
        E.session_desktop_opened,
        E.session_desktop_closed,
        E.session_channel_refused,
        E.provider_connection,
    ),
    4010: (E.session_file_transfer,),
    # The device owner's mail after an unattended session.
    4009: (E.owner_notified,),
    4014: (E.session_forward_opened,),
    2004: (E.provider_alert, E.recording_gap),
    5001: (
        E.device_created,
        E.device_updated,
        E.device_deleted,
        E.device_retired,
        E.agent_enrolled,
        E.provider_devices_synced,
    ),
    # Requests from ticket systems and browsers refused at the API.
    6003: (E.ticket_access_denied, E.connector_webhook_rejected, E.auth_csrf_rejected),
    # Stored evidence and ticket records: written, read, exported, erased.
    6005: (
        E.session_rated,
        E.ticket_created,
        E.ticket_updated,
        E.ticket_closed,
        E.ticket_reopened,
        E.ticket_reassigned,
        E.ticket_merged,
        E.ticket_erased,
        E.recording_started,
        E.recording_chunk,
        E.recording_ended,
        E.recording_viewed,
        E.file_kept,
        E.file_viewed,
        E.audit_timeline_viewed,
        E.evidence_exported,
        E.history_viewed,
        E.audit_verification_requested,
        E.audit_checkpoint_timestamped,
        E.audit_timestamp_failed,
    ),
}

OCSF_CLASS: dict[str, int] = {
    event.value: uid for uid, events in _BY_CLASS.items() for event in events
}


def ocsf_class(event_type: str) -> tuple[int, str] | None:
    """The OCSF class uid and name of ``event_type`` (None for a type outside the catalogue)."""
    uid = OCSF_CLASS.get(event_type)
    return None if uid is None else (uid, CLASSES[uid])

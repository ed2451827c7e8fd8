"""The broker's one error tree. Domain code raises these; ``broker.app`` maps them to HTTP.

Errors know nothing of HTTP: each carries a stable machine ``code`` and a human ``detail``.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""

    code = "error"

    def __init__(self, detail: str, *, keep_changes: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        # A refusal that must still be remembered (the audit event of a failed login, a
        # consent attempt counter) sets keep_changes: the request's transaction commits
        # before the error reaches the client. Everything else rolls back.
        self.keep_changes = keep_changes


class ValidationFailed(BrokerError):
    code = "invalid_request"


class NotAuthenticated(BrokerError):
    code = "not_authenticated"


class PermissionDenied(BrokerError):
    code = "forbidden"


class NotFound(BrokerError):
    code = "not_found"


class Gone(BrokerError):
    """It existed but is no longer kept (an expired history link)."""

    code = "gone"


class Conflict(BrokerError):
    code = "conflict"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class PolicyDenied(BrokerError):
    """A rule of the broker's policy refused the action (reason, groups, limits...)."""

    code = "policy_denied"


class RateLimited(BrokerError):
    """Too many tries: come back in ``retry_after`` seconds (the ``Retry-After`` header)."""

    code = "rate_limited"

    def __init__(
        self, detail: str, *, retry_after: int | None = None, keep_changes: bool = False
    ) -> None:
        super().__init__(detail, keep_changes=keep_changes)
        self.retry_after = retry_after


class ProviderError(BrokerError):
    """A remote-access provider failed; adapters raise it ``from`` the foreign error."""

    code = "provider_error"


class ConnectorError(BrokerError):
    """A ticket-system connector failed."""

    code = "connector_error"


class AuditFailure(BrokerError):
    """The audit log could not record an event: the change it belongs to must not happen."""

    code = "audit_failure"


class LoginRequired(NotAuthenticated):
    """A page asked for by a browser that is not logged in: the page kit answers with the
    login page (``broker/ui/kit.py``); the API would answer 401."""

    code = "login_required"


class PasswordChangeRequired(PermissionDenied):
    """A user who must change their password opens another page: sent to the change first."""

    code = "password_change_required"


class PageForbidden(PermissionDenied):
    """A logged-in user whose role a page does not admit (the 403 page)."""


class SiemDeliveryError(BrokerError):
    """A SIEM receiver did not take a batch (unreachable, refused, no acknowledgement)."""

    code = "siem_delivery_failed"


class IdentityMismatch(BrokerError):
    """This replica holds other keys than those the database was sealed with: it must not
    start (raised at start-up only, never in a request)."""

    code = "identity_mismatch"


# The one error→HTTP status table, read by the API's exception handler and by the page kit's
# (broker/ui/kit.py), so a page refuses with the status the API would give. First match wins:
# a subclass listed before its base gets its own status.
STATUS: list[tuple[type[BrokerError], int]] = [
    (ValidationFailed, 422),
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (PolicyDenied, 403),
    (NotFound, 404),
    (Gone, 410),
    (Conflict, 409),
    (RateLimited, 429),
    (ProviderError, 502),
    (ConnectorError, 502),
    (AuditFailure, 503),
]


def status_for(exc: BrokerError) -> int:
    """The HTTP status an error answers with; 400 for any error the table does not name."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400

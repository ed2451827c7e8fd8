"""The agent's own small error tree (it must not depend on the broker's)."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The stored configuration is missing, unreadable or unsafe."""


class EnrollmentError(AgentError):
    """The broker refused the enrollment (bad, reused or expired token) or it failed."""


class HostKeyMismatchError(AgentError):
    """The broker presented a key other than the one pinned at enrollment."""


class CapabilityDeniedError(AgentError):
    """A channel asked for something the local user did not approve."""


class ConnectionLostError(AgentError):
    """The link to the broker dropped before the broker welcomed the agent."""

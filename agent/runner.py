"""Enrollment and the run loop: dial out, stay connected, reconnect with jittered back-off."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import asyncssh
import structlog

from agent.config import AgentSettings, EnrollmentConfig, load_enrollment, save_enrollment
from agent.consent import Prompter
from agent.errors import AgentError, EnrollmentError, HostKeyMismatchError
from agent.identity import fingerprint, load_or_create_key
from agent.server import AgentCore

log = structlog.get_logger("agent")

WELCOME_TIMEOUT = 15.0


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise AgentError(f"broker address must be HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


async def _dial(
    core: AgentCore, settings: AgentSettings, host: str, port: int
) -> asyncssh.SSHServerConnection:
    try:
        return await asyncssh.connect_reverse(
            host,
            port,
            # Channels are served by the server's sessions, which check every request
            # before accepting it (no process_factory: that would accept every request).
            server_factory=core.server_factory,
            server_host_keys=[core.key],
            allow_scp=False,
            encoding=None,
            keepalive_interval=settings.keepalive_interval,
            keepalive_count_max=settings.keepalive_count_max,
            agent_forwarding=False,
            x11_forwarding=False,
            login_timeout=30,
            # Large packets and window for port forwards (see the broker's gateway options).
            window=8 << 20,
            max_pktsize=128 << 10,
        )
    except (OSError, asyncssh.Error) as exc:
        if core.mismatch is not None:
            raise HostKeyMismatchError(
                f"the broker presented key {core.mismatch}, but {core.pinned} was pinned at "
                "enrollment; refusing to connect (re-enroll if the broker key really changed)"
            ) from exc
        raise AgentError(f"cannot reach the broker at {host}:{port}: {exc}") from exc


async def enroll(
    settings: AgentSettings,
    address: str,
    token: str,
    prompter: Prompter,
    *,
    expect_fingerprint: str | None = None,
) -> EnrollmentConfig:
    """Create the device key, present ``token`` to the broker, pin its key, save 0600."""
    host, port = parse_address(address)
    key = load_or_create_key(settings.key_path)
    core = AgentCore(key, prompter, pinned=expect_fingerprint, token=token)
    conn = await _dial(core, settings, host, port)
    try:
        welcome = await asyncio.wait_for(core.welcome, WELCOME_TIMEOUT)
    except TimeoutError as exc:
        raise EnrollmentError("the broker did not answer the enrollment in time") from exc
    finally:
        conn.close()
    seen = core.seen_broker_fp or ""
    if expect_fingerprint and seen != expect_fingerprint:
        raise HostKeyMismatchError(f"broker key is {seen}, expected {expect_fingerprint}")
    config = EnrollmentConfig(
        broker_host=host,
        broker_port=port,
        broker_fingerprint=seen,
        device_id=str(welcome["device_id"]),
        device_name=str(welcome.get("device_name", "")),
        policy=dict(welcome.get("policy", {})),
    )
    save_enrollment(settings, config)
    log.info(
        "agent.enrolled",
        device_id=config.device_id,
        broker_fingerprint=seen,
        device_fingerprint=fingerprint(key),
    )
    return config


class Backoff:
    """Exponential back-off with jitter, so a restarted broker is not hit by every agent at once.

    The ceiling doubles from ``initial`` up to ``maximum`` and stays there, however long the
    broker is away: the count of attempts stops growing once the cap is reached (2**1024
    seconds is no float: an agent offline for a long weekend must not crash on its redial).
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum, self.attempt = initial, maximum, 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.attempt, 64))
        if ceiling < self.maximum:
            self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not crypto

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class RunHandle:
    core: AgentCore
    connected: asyncio.Event


async def run(settings: AgentSettings, prompter: Prompter, handle: RunHandle | None = None) -> None:
    """Stay connected until cancelled; a pinned-key mismatch stops the agent for good."""
    config = load_enrollment(settings)
    key = load_or_create_key(settings.key_path)
    core = (
        handle.core
        if handle
        else AgentCore(
            key,
            prompter,
            pinned=config.broker_fingerprint,
            device_id=config.device_id,
            consent_timeout=settings.consent_timeout_seconds,
            shell_command=settings.shell_command,
        )
    )
    backoff = Backoff(settings.backoff_initial, settings.backoff_max)
    while True:
        try:
            conn = await _dial(core, settings, config.broker_host, config.broker_port)
        except HostKeyMismatchError:
            raise
        except AgentError as exc:
            delay = backoff.next_delay()
            log.warning("agent.connect_failed", error=str(exc), retry_in=round(delay, 2))
            await asyncio.sleep(delay)
            continue
        try:
            await asyncio.wait_for(asyncio.shield(core.welcome), WELCOME_TIMEOUT)
            backoff.reset()
            log.info("agent.connected", broker=f"{config.broker_host}:{config.broker_port}")
            if handle:
                handle.connected.set()
        except (TimeoutError, AgentError) as exc:
            log.warning("agent.not_welcomed", error=str(exc))
            conn.close()
        await conn.wait_closed()
        if handle:
            handle.connected.clear()
        delay = backoff.next_delay()
        log.info("agent.disconnected", retry_in=round(delay, 2))
        await asyncio.sleep(delay)

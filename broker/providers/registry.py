"""Provider discovery: entry points group ``supportbroker.providers``, built-ins as fallback.

Each entry point names a class with a ``from_env()`` constructor (its own settings). Instances
are cached per process because the MeshCentral client keeps one control connection open;
tests install their own instances with :func:`install`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, cast

from pydantic import ValidationError

from broker.errors import NotFound, ProviderError
from broker.providers.base import Offer, RemoteAccessProvider

GROUP = "supportbroker.providers"
BUILTIN: dict[str, str] = {
    "null": "broker.providers.null:NullProvider",
    "meshcentral": "broker.providers.meshcentral.provider:MeshCentralProvider",
    "anydesk": "broker.providers.anydesk.provider:AnyDeskProvider",
}

_instances: dict[str, RemoteAccessProvider] = {}
# What a provider class offers, once read: finding it scans every installed distribution's
# entry points (about 10 ms), and session answers ask for it on every request.
_offers: dict[str, Offer] = {}


def available() -> dict[str, str]:
    """Provider name → ``module:Class``, entry points overriding the built-ins."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found[ep.name] = ep.value
    return found


def _load(target: str) -> Callable[[], Any]:
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    factory = getattr(cls, "from_env", cls)
    return cast(Callable[[], Any], factory)


def _not_configured(name: str, exc: ValidationError) -> str:
    """Words for the admin, not validation text: which setting (as the environment variable
    the provider's settings read, ``SUPPORTBROKER_PROVIDER_<NAME>_<FIELD>``) is missing or
    wrong."""
    problems = []
    for error in exc.errors()[:3]:
        field = "_".join(str(p) for p in error.get("loc", ())).upper()
        variable = f"SUPPORTBROKER_PROVIDER_{name.upper()}_{field}"
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        if not field:  # a rule across settings: its own message names them
            problems.append(message)
        elif error.get("type") == "missing":
            problems.append(f"{variable} is not set")
        else:
            problems.append(f"{variable} is not valid ({message.lower()})")
    return f"{name} is not set up yet: {'; '.join(problems)}."


def get(name: str) -> RemoteAccessProvider:
    """The process-wide instance of provider ``name``."""
    if name in _instances:
        return _instances[name]
    target = available().get(name)
    if target is None:
        raise NotFound(f"unknown provider {name!r}; known: {', '.join(sorted(available()))}")
    try:
        provider = _load(target)()
    except ValidationError as exc:
        raise ProviderError(_not_configured(name, exc)) from exc
    if not isinstance(provider, RemoteAccessProvider):
        raise ProviderError(f"provider {name!r} ({target}) does not implement the provider port")
    _instances[name] = provider
    return provider


def offer_of(name: str) -> Offer:
    """What provider ``name`` can give: its class's ``offers``, read without configuring it
    (a provider that is not set up yet still says what it could do)."""
    if name in _instances:
        return _instances[name].offers
    if name in _offers:
        return _offers[name]
    target = available().get(name)
    if target is None:
        raise NotFound(f"unknown provider {name!r}; known: {', '.join(sorted(available()))}")
    module_name, _, attr = target.partition(":")
    offers = getattr(getattr(importlib.import_module(module_name), attr), "offers", None)
    if not isinstance(offers, Offer):
        raise ProviderError(f"provider {name!r} ({target}) does not declare what it offers")
    _offers[name] = offers
    return offers


def install(name: str, provider: RemoteAccessProvider) -> None:
    """Use ``provider`` for ``name`` from now on (tests, embedding)."""
    _instances[name] = provider


async def reset() -> None:
    """Close and forget every instance."""
    instances = list(_instances.values())
    _instances.clear()
    _offers.clear()
    for provider in instances:
        await provider.aclose()

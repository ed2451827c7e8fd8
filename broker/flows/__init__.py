"""Flows: what spans domains, above the domain services and below the routers and pages.

A domain service (sessions, consent, tickets, connectors, providers, gateway, ...) changes
its own tables and calls only domains below it. What one domain's change causes in another
lives here, in one place a reader can open: the session lifecycle's reactions
(:mod:`~broker.flows.lifecycle`), the request → consent → approval sequence
(:mod:`~broker.flows.approval`) and a ticket's end ending its sessions
(:mod:`~broker.flows.tickets`). Routers, pages and the gateway's agent channel call flows;
flows call services; services never call flows.
"""

"""Ticket-system connectors: look tickets up, take their webhooks, write the story back.

The port is :class:`broker.connectors.base.TicketConnector`; implementations live in one
sub-package per system and are found through the ``supportbroker.connectors`` entry points
(see :mod:`broker.connectors.registry`). Comments go out through the durable outbox.
"""

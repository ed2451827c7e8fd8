"""Tickets from help-desk systems (or typed in, standalone) that sessions are about."""

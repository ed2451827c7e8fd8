"""Freshdesk connector (REST API v2, private notes)."""

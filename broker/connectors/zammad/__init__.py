"""Zammad connector (REST API, token auth)."""

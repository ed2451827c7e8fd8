"""Jira Service Management connector (REST API, internal comments)."""

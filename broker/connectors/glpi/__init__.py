"""GLPI connector (REST API v1: initSession, Ticket, ITILFollowup, killSession)."""

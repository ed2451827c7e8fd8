"""Notices to device owners by mail: the outbox table, the mail port and its delivery."""

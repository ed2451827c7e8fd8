"""Wires the audit library into the broker: the one ``record_event`` every domain calls."""

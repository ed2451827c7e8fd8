"""SIEM export: every audit record's metadata, in log order, to JSON-lines or syslog receivers."""

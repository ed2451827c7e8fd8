"""AnyDesk provider: launch URIs for approved sessions, REST API for reconciliation."""

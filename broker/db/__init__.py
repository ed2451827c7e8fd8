"""Database plumbing: engine, declarative base, session-per-request, repository base."""

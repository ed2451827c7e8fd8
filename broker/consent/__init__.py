"""The end user's consent: codes, link tokens, decisions, brute-force protection."""

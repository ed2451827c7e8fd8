"""osTicket connector (API key; the API only creates tickets)."""

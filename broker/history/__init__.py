"""The end user's history of their device, opened from a consent page (broker.flows.history)."""

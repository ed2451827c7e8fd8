"""Generic signed webhook connector (in and out)."""

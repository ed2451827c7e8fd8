"""gateway domain."""

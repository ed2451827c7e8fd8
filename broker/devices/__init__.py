"""Device groups (with their policies), devices, and which technicians serve which groups."""

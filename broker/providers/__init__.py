"""Remote-access providers: the port (base.py), a null provider, MeshCentral and AnyDesk."""

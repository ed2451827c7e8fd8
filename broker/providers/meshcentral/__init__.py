"""MeshCentral provider: our own async client for ``/control.ashx`` and the provider on top."""

"""Users, roles, web sessions and API tokens; who may do what."""

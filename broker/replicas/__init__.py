"""Several ``supportbroker serve`` replicas on one PostgreSQL database (docs/DEPLOY.md):
one identity, who is alive (heartbeats), which replica holds each agent, and leases that
run the background jobs on one replica at a time."""

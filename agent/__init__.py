"""The supportbroker end-user agent: dials out to the broker's SSH gateway, asks the local
user for consent, and serves only what was approved. Imports nothing from ``broker/``."""

__version__ = "0.1.0"

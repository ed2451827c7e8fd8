"""supportbroker's broker: the FastAPI service that brokers remote-support sessions."""

__version__ = "0.1.0"

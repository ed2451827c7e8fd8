"""supportbroker's audit library: an encrypted, tamper-evident, verifiable event log.

Pure library: it knows nothing of the broker. Third parties use it to verify evidence
(``python -m audit verify BUNDLE --public-key KEY``).
"""

__version__ = "1.0.0"

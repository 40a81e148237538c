"""EdgeGate: a pre-merge gate for edge ML models."""

__version__ = "0.1.0"

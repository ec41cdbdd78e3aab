"""The agency's shared Django app: the health endpoint and the agency footer."""

__version__ = "0.1.0"

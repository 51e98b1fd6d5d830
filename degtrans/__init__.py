"""degtrans: degradation transfer for spatially variant camera blur."""

__version__ = "0.1.0"

"""Skybook: an open-source airline reservation platform."""

__version__ = "0.1.0"

"""The version of rlplug, kept apart so that plugin loading can read it without importing the package root."""

__version__ = "0.1.0"

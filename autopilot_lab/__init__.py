"""Autopilot Lab: a verified agent loop for model work (generate -> score -> hint -> regenerate)."""

__version__ = "0.1.0"

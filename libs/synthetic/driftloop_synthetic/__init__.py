"""Synthetic contact-center interactions with controllable drift, for tests and the demo."""

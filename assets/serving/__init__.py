"""Serving: the champion on engines behind the gateway."""

"""Serving runtime outside Dagster: the OpenAI-compatible gateway and engine launchers."""

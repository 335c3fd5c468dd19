"""The OpenAI-compatible gateway in front of the inference engines."""

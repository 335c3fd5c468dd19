"""JSON for the gateway's hot path (one parse and one dump per streamed token): orjson when installed."""

try:
    import orjson

    def dumps(obj) -> str:
        return orjson.dumps(obj).decode()

    loads = orjson.loads
except ImportError:  # pragma: no cover — orjson is a dependency; the stdlib is the fallback
    import json

    dumps = json.dumps
    loads = json.loads

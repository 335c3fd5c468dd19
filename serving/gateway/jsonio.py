"""JSON for the gateway's hot path (one parse and one dump per streamed token): orjson when installed."""

try:
    import orjson

    def dumps(obj) -> str:
        return orjson.dumps(obj).decode()

    dumpb = orjson.dumps
    loads = orjson.loads
except ImportError:  # pragma: no cover — orjson is a dependency; the stdlib is the fallback
    import json

    dumps = json.dumps
    loads = json.loads

    def dumpb(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

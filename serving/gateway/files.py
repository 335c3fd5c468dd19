"""``/v1/files`` of the Batch API: JSONL uploads (``purpose="batch"``) and the result files batches write.

Files live under the batch folder (``GatewaySettings.batch_dir()``), one folder per tenant (named by a hash of
the tenant, so that a name cannot reach outside it)::

    {batch_dir}/<tenant hash>/files/file-<24 hex>.jsonl   the content
    {batch_dir}/<tenant hash>/files/file-<24 hex>.json    its metadata (written last: a file exists iff it does)

Both are written to a temporary name and renamed, so a reader sees a whole file or none. An id is looked up in
the caller's own folder only: another tenant's file answers 404 exactly like one that does not exist. An upload
is streamed to disk as it arrives (``multipart``'s push parser, at most ``max_file_bytes``) and validated line
by line before it is kept (:func:`validate_lines`): a bad line is a 400 naming its number and field.
"""

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path

from fastapi import Request
from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser, parse_options_header
from pydantic import ValidationError

from ..atomic import write_durable
from ..batch import BadLine, BatchLine, parse_lines
from .errors import ApiError
from .schemas import ChatRequest, CompletionRequest, describe

FILE_ID = re.compile(r"^file-[0-9a-f]{24}$")
UPLOAD_PURPOSES = ("batch",)
"""What a client may upload (the gateway itself writes ``batch_output`` files)."""
MAX_FIELD_BYTES = 1024


def tenant_folder(root: str | os.PathLike, tenant: str) -> Path:
    """A tenant's folder under the batch folder: named by the SHA-256 of the tenant, never by the name itself."""
    return Path(root) / hashlib.sha256(tenant.encode()).hexdigest()[:32]


def validate_lines(data: bytes, url: str | None = None, max_lines: int | None = None) -> list[BatchLine]:
    """The request lines of a batch input file (:func:`serving.batch.parse_lines`), each ``body`` also checked
    against the gateway's request schema of its ``url``; :class:`BadLine` names the first bad line and field."""
    lines = parse_lines(data, url)
    if max_lines is not None and len(lines) > max_lines:
        raise BadLine(max_lines + 1, None, f"the file has {len(lines)} request lines; the limit is {max_lines}")
    numbers = [n for n, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]
    for number, line in zip(numbers, lines, strict=True):
        schema = ChatRequest if line.url == "/v1/chat/completions" else CompletionRequest
        try:
            req = schema.model_validate(line.body)
        except ValidationError as exc:
            message, param = describe(exc)
            raise BadLine(number, f"body.{param}" if param else "body", f"body: {message}") from exc
        if req.stream:
            raise BadLine(number, "body.stream", "body: a batch line cannot stream (stream must be false)")
    return lines


def bad_line_error(exc: BadLine) -> ApiError:
    return ApiError(400, str(exc), param=exc.field, code="invalid_batch_line")


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"no {kind} with id {object_id!r}", code="not_found")


@dataclasses.dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def to_api(self) -> dict:
        """The OpenAI ``file`` object."""
        return {"object": "file", "status": "processed", "expires_at": None, **dataclasses.asdict(self)}


class FileStore:
    """The files of every tenant, under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def folder(self, tenant: str) -> Path:
        return tenant_folder(self.root, tenant) / "files"

    def get(self, tenant: str, file_id: str) -> StoredFile:
        """The tenant's file ``file_id``; 404 when it has none of that id (whoever else may)."""
        meta = self.folder(tenant) / f"{file_id}.json"
        if not FILE_ID.match(file_id) or not meta.is_file():
            raise not_found("file", file_id)
        return StoredFile(**json.loads(meta.read_text()))

    def content_path(self, tenant: str, file_id: str) -> Path:
        self.get(tenant, file_id)
        return self.folder(tenant) / f"{file_id}.jsonl"

    def read(self, tenant: str, file_id: str) -> bytes:
        return self.content_path(tenant, file_id).read_bytes()

    def list(self, tenant: str, purpose: str | None = None) -> list[StoredFile]:
        files = [StoredFile(**json.loads(p.read_text())) for p in self.folder(tenant).glob("file-*.json")]
        return sorted(
            (f for f in files if purpose in (None, f.purpose)), key=lambda f: (f.created_at, f.id), reverse=True
        )

    def new_upload(self, tenant: str) -> tuple[str, Path]:
        """A new file id and the temporary path its upload is streamed to."""
        file_id = f"file-{secrets.token_hex(12)}"
        folder = self.folder(tenant)
        folder.mkdir(parents=True, exist_ok=True)
        return file_id, folder / f".{file_id}.upload"

    def keep(self, tenant: str, file_id: str, tmp: Path, filename: str, purpose: str) -> StoredFile:
        """Rename a complete upload into place and write its metadata (last)."""
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(self.folder(tenant) / f"{file_id}.jsonl")
        return self._meta(tenant, file_id, filename, purpose)

    def write(self, tenant: str, data: bytes, filename: str, purpose: str) -> StoredFile:
        """A file the gateway writes (a batch's output or errors)."""
        file_id, _ = self.new_upload(tenant)
        write_durable(self.folder(tenant) / f"{file_id}.jsonl", data)
        return self._meta(tenant, file_id, filename, purpose)

    def _meta(self, tenant: str, file_id: str, filename: str, purpose: str) -> StoredFile:
        content = self.folder(tenant) / f"{file_id}.jsonl"
        stored = StoredFile(file_id, filename, purpose, content.stat().st_size, int(time.time()))
        write_durable(self.folder(tenant) / f"{file_id}.json", json.dumps(dataclasses.asdict(stored)).encode())
        return stored


async def receive_upload(request: Request, tmp: Path, max_bytes: int) -> tuple[str, str]:
    """Stream a ``multipart/form-data`` upload (fields ``file`` and ``purpose``) to ``tmp``; returns
    ``(filename, purpose)``. 413 past ``max_bytes``, 400 for a body that is not such a form."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != "multipart/form-data" or not options.get("boundary"):
        raise ApiError(
            400, "expected a multipart/form-data body with fields 'file' and 'purpose'", code="invalid_request"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise ApiError(413, f"upload of {declared} bytes exceeds the limit of {max_bytes} bytes", code="file_too_large")
    fields: dict[str, bytes] = {}
    filename, segment, out = None, None, None
    try:
        with (
            tmp.open("wb") as out,
            PushMultipartParser(options["boundary"], max_segment_size=max_bytes, max_segment_count=8) as parser,
        ):
            async for chunk in request.stream():
                file_parts: list[bytes] = []
                for event in parser.parse(chunk) if chunk else ():
                    if isinstance(event, MultipartSegment):
                        segment = event
                        if segment.name == "file":
                            filename = segment.filename or "upload.jsonl"
                        fields.setdefault(segment.name, b"")
                    elif event is None:
                        segment = None
                    elif segment is not None and segment.name == "file":
                        file_parts.append(event)
                    elif segment is not None:
                        if len(fields[segment.name]) + len(event) > MAX_FIELD_BYTES:
                            raise ApiError(400, f"form field {segment.name!r} is too long", param=segment.name)
                        fields[segment.name] += event
                if file_parts:
                    await asyncio.to_thread(out.write, b"".join(file_parts))
    except ParserLimitReached as exc:
        raise ApiError(413, f"the upload exceeds the limit of {max_bytes} bytes", code="file_too_large") from exc
    except MultipartError as exc:
        raise ApiError(400, f"invalid multipart/form-data body: {exc}", code="invalid_request") from exc
    if filename is None:
        raise ApiError(400, "missing required field 'file'", param="file", code="invalid_request")
    purpose = fields.get("purpose", b"").decode("utf-8", "replace")
    if purpose not in UPLOAD_PURPOSES:
        raise ApiError(
            400,
            f"invalid value for 'purpose': {purpose!r}; this gateway accepts {', '.join(map(repr, UPLOAD_PURPOSES))}",
            param="purpose",
            code="invalid_request",
        )
    return filename, purpose

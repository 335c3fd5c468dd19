"""Errors the gateway answers with: OpenAI's error shape, ``{"error": {message, type, param, code}}``."""

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """A request that ends here, with an HTTP status and an OpenAI-shaped body naming what was wrong."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers={**(headers or {}), **self.headers})


def internal_error(exc: BaseException) -> ApiError:
    """What a bug in the gateway answers: a 500 in the same shape (the type of the exception, never its text)."""
    return ApiError(500, f"internal error ({type(exc).__name__})", kind="server_error", code="internal_error")

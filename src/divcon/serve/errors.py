"""Every error the server answers has OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, so a
client's own error handling works unchanged: bad input is a 4xx that says what to fix, and anything unexpected a
500 that says nothing of the server's internals (Starlette re-raises it after the handler, so the server's log gets
the traceback and the client never does)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

# the error type a client sees for a status code that no ApiError named
TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
         503: "service_unavailable", 504: "timeout_error"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


def error_body(status: int, message: str, code: str | None) -> dict:
    """The error object, also sent as the last event of a stream that fails after it has begun."""
    return {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": None, "code": code}}


def error_response(status: int, message: str, code: str | None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code), status_code=status, headers=headers)


def _validation_message(e: RequestValidationError) -> tuple[str, str]:
    first = e.errors()[0]
    if first["type"] == "json_invalid":
        return "the request body is not valid JSON", "invalid_json"
    where = ".".join(str(p) for p in first["loc"][1:]) or "body"  # loc starts with "body"
    return f"{where}: {first['msg']}", "invalid_request"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.message, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(400, *_validation_message(e))

    @app.exception_handler(HTTPException)  # routing (404 unknown path, 405), the body limit (413)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), None, e.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception) -> JSONResponse:
        return error_response(500, "internal server error", "internal_error")

"""A cap on the request body, checked while it is read: a Content-Length over the cap is refused before any byte is
kept, a chunked body as soon as the bytes received pass it, so no request can make the server buffer more.

The rest of a refused body is read and dropped before the 413 goes out (up to :data:`DRAIN_BYTES`): a client sends
its whole body before it reads the answer, and a server that closes on unread bytes resets the connection, so the
client would see "connection reset" instead of the 413.

Why not ``FastAPI(max_body_size=...)``: Starlette's limiter answers a declared oversize body with its own plain-text
413, replacing the app's response, and every error here must have OpenAI's JSON shape. The refusal is an
``HTTPException`` because FastAPI re-raises those from its body reading (anything else becomes "There was an error
parsing the body"), so the app's handler turns it into the JSON error.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


DRAIN_BYTES = 16 * 1024 * 1024  # past this, a refused body is cut off instead: the client sees a reset


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        received = 0

        async def drop_rest() -> None:
            dropped = 0
            while dropped <= DRAIN_BYTES:
                message = await receive()
                dropped += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body"):
                    return

        async def limited() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.limit:
                await drop_rest()
                raise BodyTooLarge(self.limit)
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                if message.get("more_body"):
                    await drop_rest()
                raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)

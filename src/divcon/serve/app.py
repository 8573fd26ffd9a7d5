"""The FastAPI app: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health``.

Every model is loaded when the app is made, before the server binds, so a model that cannot load fails the command
instead of the first request; models shared by served names (the teacher as decomposer and solver) load once. Each
request runs its pipeline on a worker thread (:mod:`.admission`), so the event loop only parses, waits and answers,
and every model call goes through the call log like any other divcon call. A streamed request runs the same way, its
worker handing the answer's text to the event loop piece by piece as the solver writes it (:mod:`.response`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from divcon.backends import BackendUnavailable, RequestRejected, load_backend
from divcon.cost import load_table
from divcon.evaluate import default_concurrency, unpriced_models
from divcon.pipeline import Pipeline, PipelineResult
from divcon.serve.admission import Admission, Busy
from divcon.serve.body_limit import BodyLimit
from divcon.serve.config import ServeConfig, ServedModel
from divcon.serve.errors import ApiError, error_body, error_response, install_handlers
from divcon.serve.response import Chunks, Prices, Trim, completion, extras
from divcon.serve.schema import ChatCompletionRequest
from divcon.tasks.base import Example

RETRY_AFTER_S = 5  # a queue full of minute-long questions frees a place every few seconds at best
# a reverse proxy (nginx) must not buffer a stream, or the client sees it all at once again
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

log = logging.getLogger(__name__)


def check_limits(body: ChatCompletionRequest, config: ServeConfig) -> None:
    if len(body.messages) > config.max_messages:
        raise ApiError(400, f"{len(body.messages)} messages; at most {config.max_messages} are accepted",
                       "too_many_messages")
    if body.token_budget is not None and body.token_budget > config.max_tokens:
        raise ApiError(400, f"max_tokens is {body.token_budget}; at most {config.max_tokens} is accepted",
                       "max_tokens_too_large")


def model_error(e: RequestRejected | BackendUnavailable) -> ApiError:
    if isinstance(e, RequestRejected):
        return ApiError(400, f"the model refused the request: {e}", "request_rejected")
    return ApiError(503, f"a model is unavailable: {e}", "backend_unavailable")


def stream_error(e: Exception) -> dict:
    """The error event of a stream that fails after it began; like the 500 handler, an unexpected error is logged
    with its traceback and the client told nothing of it."""
    if isinstance(e, (RequestRejected, BackendUnavailable)):
        api = model_error(e)
        return error_body(api.status, api.message, api.code)
    log.error("a streamed request failed", exc_info=e)
    return error_body(500, "internal server error", "internal_error")


def to_example(request_id: str, body: ChatCompletionRequest) -> Example:
    question = body.question()
    if not question or not question.strip():
        raise ApiError(400, "no question: the last user message must have text", "no_question")
    return Example(request_id, question, [], context=body.divcon.context if body.divcon else None)


def authorizer(api_key: str) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Middleware that lets through only ``Authorization: Bearer <api_key>`` (compared in constant time), except
    /health, which a load balancer probes without credentials and which tells only how busy the server is."""
    expected = api_key.encode()

    async def authorize(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if request.url.path != "/health" and not (scheme.lower() == "bearer"
                                                  and hmac.compare_digest(token.strip().encode(), expected)):
            return error_response(401, "a valid API key is required: Authorization: Bearer <key>", "invalid_api_key",
                                  {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    return authorize


def create_app(config: ServeConfig, api_key: str | None = None) -> FastAPI:
    backends = {spec: load_backend(spec) for spec in config.specs}
    for backend in backends.values():
        backend.load()
    admission = Admission(config.concurrency or default_concurrency(*backends.values()), config.queue)
    prices = Prices(load_table())
    for backend in backends.values():  # looked up now, not on the event loop during the first requests
        prices.dollars(backend.spec, 0, 0)
    unpriced_models([b.spec for b in backends.values()], prices.table)  # a warning for each, once
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has finished the requests in flight; pipelines whose requests were answered 504 may still run
        await asyncio.to_thread(admission.shutdown)

    app = FastAPI(title="divcon", lifespan=lifespan, openapi_url=None)
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    if api_key:
        app.middleware("http")(authorizer(api_key))

    def pipeline(served: ServedModel, token_budget: int | None) -> Pipeline:
        cfg = served.pipeline
        if token_budget is not None:  # the client's max_tokens bounds the generation that writes the answer
            cfg = replace(cfg, solve_tokens=token_budget, direct_tokens=token_budget)
        return Pipeline(cfg, solver=backends[served.solver],
                        decomposer=backends[served.decomposer] if served.decomposer else None)

    def submit(work: Callable[[], Any]) -> Future:
        try:
            return admission.submit(work)
        except Busy:
            raise ApiError(429, f"the server is busy ({admission.capacity} requests running or waiting); retry later",
                           "server_busy", {"Retry-After": str(RETRY_AFTER_S)}) from None

    def timed_out() -> ApiError:
        return ApiError(504, f"no answer within {config.timeout:g} seconds", "timeout")

    async def run(pipe: Pipeline, example: Example, family: str) -> tuple[PipelineResult, float]:
        def work() -> tuple[PipelineResult, float]:
            t0 = time.perf_counter()
            return pipe.run_one(example, family), time.perf_counter() - t0

        future = submit(work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), config.timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise timed_out() from None
        except (RequestRejected, BackendUnavailable) as e:
            raise model_error(e) from None

    async def stream(pipe: Pipeline, example: Example, served: ServedModel, request_id: str) -> StreamingResponse:
        """Run the pipeline like :func:`run`, its answer's text posted to this loop as the solver writes it. The
        response starts with the first piece of text: until then a failure, refusal or timeout is answered with
        its status code like a non-streamed request; after it, with an error event. The timeout bounds the whole
        request either way."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()  # ("text", str) ... then ("done" | "error", ...)

        def post(kind: str, value: Any) -> None:  # called on the worker thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop has closed: nobody is listening any more
                pass

        def work() -> None:
            t0 = time.perf_counter()
            try:
                result = pipe.run_one(example, served.family, lambda text: post("text", text))
            except Exception as e:  # noqa: BLE001 (every failure goes to the client, as the non-streamed path's does)
                post("error", e)
            else:
                post("done", (result, time.perf_counter() - t0))

        future = submit(work)
        deadline = loop.time() + config.timeout

        async def next_event() -> tuple[str, Any]:
            if not events.empty():
                return events.get_nowait()
            try:
                return await asyncio.wait_for(events.get(), deadline - loop.time())
            except asyncio.TimeoutError:
                raise timed_out() from None

        try:
            first = await next_event()
        except BaseException:
            future.cancel()  # one still waiting for a worker gives its place back at once
            raise
        if first[0] == "error":
            e = first[1]
            raise model_error(e) if isinstance(e, (RequestRejected, BackendUnavailable)) else e
        created = int(time.time())
        chunks = Chunks(request_id, created, served.name)

        async def events_out() -> AsyncIterator[str]:
            trim = Trim()  # the pieces must add up to the non-streamed message, which is stripped
            kind, value = first
            try:
                yield chunks.start()
                while kind == "text":
                    if piece := trim.feed(value):
                        yield chunks.text(piece)
                    kind, value = await next_event()
                if kind == "error":
                    yield chunks.error(stream_error(value))
                    return
                result, seconds = value
                reply = completion(request_id, created, served.name, result,
                                   extras(result, served.family, seconds, prices))
                content = reply["choices"][0]["message"]["content"]
                if not content.startswith(trim.sent):
                    log.warning("%s: the streamed text differs from the final output", request_id)
                elif rest := content[len(trim.sent):]:  # a backend's stream left out text its generation returned
                    yield chunks.text(rest)
                yield chunks.end(reply)
            except ApiError as e:  # the timeout, while the answer was being written
                yield chunks.error(error_body(e.status, e.message, e.code))

        return StreamingResponse(events_out(), media_type="text/event-stream", headers=STREAM_HEADERS)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "busy": admission.admitted, "capacity": admission.capacity}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [
            {"id": m.name, "object": "model", "created": started, "owned_by": "divcon",
             "divcon": {"mode": m.pipeline.mode, "family": m.family, "decomposer": m.decomposer, "solver": m.solver}}
            for m in config.models.values()]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> dict | StreamingResponse:
        served = config.models.get(body.model)
        if served is None:
            raise ApiError(404, f"model {body.model!r} is not served; served: {', '.join(config.models)}",
                           "model_not_found")
        check_limits(body, config)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        example = to_example(request_id, body)
        pipe = pipeline(served, body.token_budget)
        if body.stream:
            return await stream(pipe, example, served, request_id)
        result, seconds = await run(pipe, example, served.family)
        return completion(request_id, int(time.time()), served.name, result,
                          extras(result, served.family, seconds, prices))

    return app

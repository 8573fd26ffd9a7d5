"""The FastAPI app: ``POST /v1/chat/completions``, ``GET /v1/models`` and ``GET /health``.

Every model is loaded when the app is made, before the server binds, so a model that cannot load fails the command
instead of the first request; models shared by served names (the teacher as decomposer and solver) load once. Each
request runs its pipeline on a worker thread (:mod:`.admission`), so the event loop only parses, waits and answers,
and every model call goes through the call log like any other divcon call.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from divcon.backends import BackendUnavailable, RequestRejected, load_backend
from divcon.cost import load_table
from divcon.evaluate import default_concurrency, unpriced_models
from divcon.pipeline import Pipeline, PipelineResult
from divcon.serve.admission import Admission, Busy
from divcon.serve.body_limit import BodyLimit
from divcon.serve.config import ServeConfig, ServedModel
from divcon.serve.errors import ApiError, error_response, install_handlers
from divcon.serve.response import Prices, chunks, completion, extras
from divcon.serve.schema import ChatCompletionRequest
from divcon.tasks.base import Example

RETRY_AFTER_S = 5  # a queue full of minute-long questions frees a place every few seconds at best


def check_limits(body: ChatCompletionRequest, config: ServeConfig) -> None:
    if len(body.messages) > config.max_messages:
        raise ApiError(400, f"{len(body.messages)} messages; at most {config.max_messages} are accepted",
                       "too_many_messages")
    if body.token_budget is not None and body.token_budget > config.max_tokens:
        raise ApiError(400, f"max_tokens is {body.token_budget}; at most {config.max_tokens} is accepted",
                       "max_tokens_too_large")


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

    async def run(pipe: Pipeline, example: Example, family: str) -> tuple[PipelineResult, float]:
        def work() -> tuple[PipelineResult, float]:
            t0 = time.perf_counter()
            return pipe.run_one(example, family), time.perf_counter() - t0

        try:
            future = admission.submit(work)
        except Busy:
            raise ApiError(429, f"the server is busy ({admission.capacity} requests running or waiting); retry later",
                           "server_busy", {"Retry-After": str(RETRY_AFTER_S)}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), config.timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise ApiError(504, f"no answer within {config.timeout:g} seconds", "timeout") from None
        except RequestRejected as e:
            raise ApiError(400, f"the model refused the request: {e}", "request_rejected") from None
        except BackendUnavailable as e:
            raise ApiError(503, f"a model is unavailable: {e}", "backend_unavailable") from None

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
        result, seconds = await run(pipeline(served, body.token_budget), example, served.family)
        reply = completion(request_id, int(time.time()), served.name, result,
                           extras(result, served.family, seconds, prices))
        if body.stream:
            return StreamingResponse(chunks(reply), media_type="text/event-stream")
        return reply

    return app

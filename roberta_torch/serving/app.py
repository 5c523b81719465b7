"""The ASGI app (Starlette): OpenAI-compatible embeddings, TEI-style rerank, health, metrics.

    GET  /health          200 {"status": "ok", ...} while the model worker runs, else 503
    GET  /metrics         Prometheus text (see metrics.py)
    GET  /v1/models       OpenAI's model list (the served names)
    POST /v1/embeddings   OpenAI's embeddings API (protocol.py)
    POST /rerank          text-embeddings-inference's rerank API (protocol.py)

The event loop parses and checks requests, tokenizes on the thread pool, and waits on the
model worker (batcher.py), which owns the models. Bodies over `max_request_bytes` are
refused while they arrive; with an API key every route but /health needs
`Authorization: Bearer <key>`, compared in constant time. Stateless: run several processes
(`--workers`) or machines behind any load balancer.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time

from .. import optional
from .batcher import ModelWorker, Overloaded, RequestTimedOut, ShuttingDown
from .metrics import ServerMetrics
from .protocol import (
    ApiError,
    bad_request,
    embedding_response,
    parse_embedding_request,
    parse_rerank_request,
    rerank_response,
)

logger = logging.getLogger(__name__)

# Bodies above this size are parsed (and responses above it serialized) on the thread pool.
_OFF_LOOP_BYTES = 256 * 1024
_OFF_LOOP_VALUES = 64 * 1024
_OPEN_PATHS = ("/health",)


def _import_starlette():
    optional.require("starlette", "`roberta-torch serve`", install="'roberta_torch[serve]'")


def _dumps(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ApiKeyMiddleware:
    """Plain ASGI middleware: every HTTP route but /health needs `Authorization: Bearer <key>`."""

    def __init__(self, app, api_key: str):
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key):
            return await self.app(scope, receive, send)
        error = ApiError(401, "Missing or wrong API key: send `Authorization: Bearer <key>` (the key the server was "
                              "started with, --api-key or ROBERTA_TORCH_API_KEY).", kind="authentication_error")
        body = _dumps(error.tei_body() if scope["path"] == "/rerank" else error.openai_body())
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


class Server:
    """The routes and their state: settings, services, the model worker, metrics."""

    def __init__(self, settings, embedding=None, rerank=None):
        self.settings = settings
        self.embedding = embedding
        self.rerank = rerank
        self.metrics = ServerMetrics()
        lanes = {service.lane: service.run for service in (embedding, rerank) if service is not None}
        self.worker = ModelWorker(lanes, settings.limits, self.metrics)

    # -- plumbing -----------------------------------------------------------------------------

    async def read_json(self, request):
        limit = self.settings.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"The request body is {int(declared):,} bytes; this server takes at most {limit:,} "
                                "(--max-request-bytes).")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"The request body is over {limit:,} bytes, this server's limit (--max-request-bytes).")
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body.strip():
            raise bad_request("The request body is empty; send a JSON object.")
        try:
            if size > _OFF_LOOP_BYTES:
                from starlette.concurrency import run_in_threadpool

                return await run_in_threadpool(json.loads, body)
            return json.loads(body)
        except (ValueError, RecursionError) as error:
            raise bad_request(f"The request body is not valid JSON ({str(error)[:120]}).") from None

    async def json_response(self, payload, values: int = 0, status: int = 200, headers: dict | None = None):
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import Response

        body = await run_in_threadpool(_dumps, payload) if values > _OFF_LOOP_VALUES else _dumps(payload)
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    async def handle(self, request, route: str, tei: bool, work):
        """Run `work(request, deadline) -> (response, inputs, tokens)`; map every failure to a JSON error."""
        started = time.monotonic()
        inputs = tokens = 0
        try:
            response, inputs, tokens = await work(request, started + self.settings.request_timeout_s)
        except Exception as failure:  # every failure becomes a JSON error; never a traceback to the client
            error = self._as_api_error(failure)
            response = await self.json_response(error.tei_body() if tei else error.openai_body(), status=error.status,
                                                headers=error.headers)
        self.metrics.observe_request(route, response.status_code, time.monotonic() - started, inputs, tokens)
        return response

    def _as_api_error(self, failure: Exception) -> ApiError:
        if isinstance(failure, ApiError):
            return failure
        if isinstance(failure, Overloaded):
            return ApiError(429, f"The server is overloaded: {failure}", headers={"Retry-After": str(failure.retry_after)},
                            code="overloaded")
        if isinstance(failure, RequestTimedOut):
            return ApiError(503, f"The request did not finish within {self.settings.request_timeout_s:g} s "
                                 "(--request-timeout); the server is busy. Retry later or send fewer texts.",
                            headers={"Retry-After": "1"}, code="timeout")
        if isinstance(failure, ShuttingDown):
            return ApiError(503, "The server is shutting down; retry on another replica.", headers={"Retry-After": "1"})
        if type(failure).__name__ == "ClientDisconnect":  # starlette's: the client left mid-body
            return ApiError(400, "The client disconnected before sending the whole body.")
        logger.error("Internal error while serving a request.", exc_info=failure)
        return ApiError(500, "Internal server error (logged on the server).")

    # -- routes -------------------------------------------------------------------------------

    async def health(self, request):
        from starlette.responses import JSONResponse

        ok = self.worker.alive
        rows, tokens = self.worker.queued
        body = {"status": "ok" if ok else "unavailable", "queue_rows": rows, "queue_tokens": tokens,
                "embedding_model": self.embedding.name if self.embedding else None,
                "rerank_model": self.rerank.name if self.rerank else None}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_route(self, request):
        from starlette.responses import Response

        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)

    async def models(self, request):
        from starlette.responses import JSONResponse

        data = [{"id": service.name, "object": "model", "created": 0, "owned_by": "roberta_torch"}
                for service in (self.embedding, self.rerank) if service is not None]
        return JSONResponse({"object": "list", "data": data})

    async def embeddings(self, request):
        return await self.handle(request, "/v1/embeddings", False, self._embeddings)

    async def _embeddings(self, request, deadline):
        from starlette.concurrency import run_in_threadpool

        service = self.embedding
        if service is None:
            raise ApiError(404, "This server has no embedding model; start it with `roberta-torch serve PRESET`.",
                           code="model_not_found")
        parsed = parse_embedding_request(await self.read_json(request), served=service.name,
                                         dimensions=service.dimensions, prompts=service.prompts,
                                         max_texts=self.settings.max_texts_per_request)
        rows, prompt_length = await run_in_threadpool(service.tokenize, parsed.texts, parsed.prompt_name)
        tokens = self._check_tokens(rows, "input")
        vectors = await self.worker.submit(service.lane, rows, [prompt_length] * len(rows), deadline)
        payload = embedding_response(vectors, parsed, model=service.name, tokens=tokens, normalized=service.normalized)
        response = await self.json_response(payload, values=vectors.size)
        return response, len(rows), tokens

    async def rerank_route(self, request):
        return await self.handle(request, "/rerank", True, self._rerank)

    async def _rerank(self, request, deadline):
        from starlette.concurrency import run_in_threadpool

        service = self.rerank
        if service is None:
            raise ApiError(404, "This server has no reranker; start it with `roberta-torch serve ... --reranker PRESET`.")
        parsed = parse_rerank_request(await self.read_json(request), served=service.name,
                                      max_texts=self.settings.max_texts_per_request)
        if not parsed.truncate:
            lengths = await run_in_threadpool(service.untruncated_lengths, parsed.query, parsed.texts)
            over = [i for i, n in enumerate(lengths) if n > service.max_length]
            if over:
                raise ApiError(413, f"(query, texts[{over[0]}]) is {lengths[over[0]]:,} tokens, over the model's "
                                    f"{service.max_length:,}; send \"truncate\": true (the default) to truncate it as "
                                    "sentence-transformers does.", param="texts")
        rows = await run_in_threadpool(service.tokenize, parsed.query, parsed.texts)
        tokens = self._check_tokens(rows, "texts")
        logits = await self.worker.submit(service.lane, rows, None, deadline)
        scores = logits if parsed.raw_scores else service.activate(logits)
        response = await self.json_response(rerank_response(scores, parsed))
        return response, len(rows), tokens

    def _check_tokens(self, rows, param: str) -> int:
        tokens = sum(len(r) for r in rows)
        limit = self.settings.max_tokens_per_request
        if tokens > limit:
            raise ApiError(413, f"The request holds {tokens:,} tokens (after truncation); this server takes at most "
                                f"{limit:,} per request (--max-tokens-per-request). Split it.", param=param)
        return tokens

    async def not_found(self, request, exc):
        from starlette.responses import JSONResponse

        error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}. Routes: GET /health, "
                                          "GET /metrics, GET /v1/models, POST /v1/embeddings, POST /rerank.")
        return JSONResponse(error.openai_body(), status_code=exc.status_code)

    # -- lifecycle ----------------------------------------------------------------------------

    async def warm_up(self) -> None:
        """One small call per model through the worker, so the first request is not slow."""
        if self.embedding is not None:
            rows, length = self.embedding.tokenize(["warm up"], None)
            await self.worker.submit(self.embedding.lane, rows, [length])
        if self.rerank is not None:
            await self.worker.submit(self.rerank.lane, self.rerank.tokenize("warm", ["up"]))

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        from starlette.concurrency import run_in_threadpool

        self.worker.start()
        await self.warm_up()
        logger.info("Model worker ready.")
        try:
            yield
        finally:
            # The server has stopped taking connections and finished its requests by now
            # (uvicorn's graceful shutdown); finish anything still queued, then stop.
            await run_in_threadpool(self.worker.close, self.settings.graceful_shutdown_s)
            logger.info("Model worker stopped.")


def create_app(settings, embedding=None, rerank=None):
    """The ASGI app for `settings`; `embedding` / `rerank` are loaded services (services.py),
    or None to load what `settings` names."""
    _import_starlette()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.routing import Route

    if embedding is None and rerank is None:
        from .services import load_services

        embedding, rerank = load_services(settings)
    server = Server(settings, embedding, rerank)
    routes = [
        Route("/health", server.health, methods=["GET"]),
        Route("/metrics", server.metrics_route, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/embeddings", server.embeddings, methods=["POST"]),
        Route("/rerank", server.rerank_route, methods=["POST"]),
    ]
    middleware = [Middleware(ApiKeyMiddleware, api_key=settings.api_key)] if settings.api_key else []
    app = Starlette(routes=routes, middleware=middleware, lifespan=server.lifespan,
                    exception_handlers={HTTPException: server.not_found})
    app.state.server = server
    return app


def app_from_environment():
    """uvicorn's factory for `--workers` processes: settings from the environment."""
    from .settings import ServerSettings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return create_app(ServerSettings.from_environment())

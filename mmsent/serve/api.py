"""The ingress's FastAPI app: routes, JSON errors (never a stack trace), the body cap, bearer-token
auth and per-request metrics. Built inside each replica by `SentimentAPI.__serve_build_asgi_app__`,
so routes close over that replica's config, model handle and metrics instead of module globals.
Whatever a client sends gets a 2xx or a 4xx; a 5xx is a server fault (500) or the model being
overloaded or away (503).

    POST /v1/sentiment   a post, a list of posts, or a multipart upload -> predictions
    GET  /v1/model       the model card
    GET  /healthz        the model is loaded and answers (a cached ping: no slot in its queue)
    GET  /docs           OpenAPI UI            GET /openapi.json
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import __version__, codes
from .inputs import RequestError, parse_json, parse_multipart
from .wire import ERROR_RESPONSES, ErrorBody, Health, ModelCard, PostIn, Prediction, Predictions

logger = logging.getLogger("ray.serve")
INLINE_BYTES = 64 * 1024  # JSON bodies up to this size are parsed on the event loop


def build_api(ingress: Any) -> FastAPI:
    cfg = ingress.cfg
    app = FastAPI(title="mmsent sentiment API", version=__version__, redoc_url=None,
                  description="Multimodal (text + image) sentiment of social-media posts.")  # fmt: skip

    @app.post("/v1/sentiment", response_model=None, openapi_extra=_request_body(cfg.max_posts),
              responses={200: {"model": Prediction | Predictions}, **ERROR_RESPONSES})  # fmt: skip
    async def sentiment(request: Request) -> JSONResponse:
        """Score one post (-> a prediction) or a list of posts (-> `{"predictions": [...]}`)."""
        ingress.authorize(request)
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            posts, single = [await parse_multipart(request, cfg)], True
        else:  # JSON, whatever the content type says (curl -d sends form-urlencoded)
            body = await request.body()
            small = len(body) <= INLINE_BYTES  # parsed at once: a thread hop would cost more
            posts, single = (
                parse_json(body, cfg) if small else await asyncio.to_thread(parse_json, body, cfg)
            )
        results = await ingress.score(posts, single)
        return JSONResponse(results[0] if single else {"predictions": results})

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}})
    async def healthz() -> dict:
        """200 once the model deployment has loaded the checkpoint and answers (open: no token;
        answered from a model ping at most `health_cache_s` old)."""
        return {"status": "ok", "model": await ingress.ping()}

    @app.get("/v1/model", response_model=ModelCard, responses={401: ERROR_RESPONSES[401]})
    async def model_card(request: Request) -> dict:
        ingress.authorize(request)
        return await ingress.card()

    @app.exception_handler(RequestError)
    async def request_error(_: Request, e: RequestError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(map(str, x.get("loc", ()))), "code": codes.MALFORMED_REQUEST,
                    "message": x.get("msg")} for x in e.errors()]  # fmt: skip
        return error_response(
            RequestError(422, codes.MALFORMED_REQUEST, "malformed request", details)
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        code = codes.NOT_FOUND if e.status_code in (404, 405) else codes.MALFORMED_REQUEST
        return error_response(RequestError(e.status_code, code, str(e.detail), headers=e.headers))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)  # the trace stays in the logs
        return error_response(RequestError(500, codes.INTERNAL_ERROR, "internal error"))

    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(Observe, metrics=ingress.metrics)  # outermost: sees every answer
    return app


class ErrorJSON(JSONResponse):
    """Error bodies echo client text (e.g. an unknown field's name): ASCII escapes render any
    string, a lone surrogate too, where UTF-8 would fail and turn the 4xx into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode()


def error_response(e: RequestError) -> JSONResponse:
    return ErrorJSON(e.body(), status_code=e.status, headers=e.headers)


def _request_body(max_posts: int) -> dict:
    post = PostIn.model_json_schema()
    posts = {"type": "array", "items": post, "minItems": 1, "maxItems": max_posts}
    form = {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "text": {"type": "string"},
        "id": {"type": "string"}, "image_url": {"type": "string"}}}  # fmt: skip
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"anyOf": [post, posts]}},
        "multipart/form-data": {"schema": form}}}}  # fmt: skip


class BodyLimit:
    """413 for a body over `max_bytes`: at once from Content-Length, else as the bytes stream in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = RequestError(413, codes.BODY_TOO_LARGE, f"body over {self.max_bytes} bytes")
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await error_response(too_large)(scope, receive, send)
        seen = 0

        async def capped_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise too_large  # answered by the RequestError handler
            return message

        await self.app(scope, capped_receive, send)


class Observe:
    """Request count by status and latency, for every answer (errors included)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
            self.metrics.observe(path, status, (time.perf_counter() - start) * 1000)

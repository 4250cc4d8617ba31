"""ASGI middleware of the ingress's app: `BodyLimit` (413 for a body over `max_body_bytes`) and
`Observe` (request count by status and latency, for every answer, errors included)."""

from __future__ import annotations

import time

from .. import codes
from .errors import RequestError, error_response
from .metrics import IngressMetrics


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
                raise too_large  # answered by the RequestError handler (mmsent.serve.errors)
            return message

        await self.app(scope, capped_receive, send)


class Observe:
    """Request count by status and latency, for every answer (errors included)."""

    def __init__(self, app, metrics: IngressMetrics):
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

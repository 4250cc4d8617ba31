"""Every error of the HTTP API and its answer: `RequestError` (status, stable code from
mmsent.codes, message, per-post details, headers), the JSON body it renders to, and the handlers
that turn everything else into one (FastAPI's validation errors, Starlette's 404/405, the model
deployment's backpressure or absence, and a bug: a bare 500, its trace in the replica's log).
Whatever a client sends ends as a 4xx here; a 5xx is left for the server itself.

    raise RequestError(422, codes.MALFORMED_REQUEST, "the body is not valid JSON")
    install_handlers(app)                    # once per FastAPI app (mmsent.serve.routes)
    raise model_error(e) from None           # a failed model call -> 503/429 with Retry-After
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from starlette.exceptions import HTTPException

from .. import codes

logger = logging.getLogger("ray.serve")
# per-post codes answered 413
TOO_LARGE = {codes.IMAGE_BYTES_TOO_LARGE, codes.IMAGE_TOO_LARGE, codes.AUDIO_BYTES_TOO_LARGE}
# the model replica is gone or restarting (e.g. killed by a post): retry later, not a 500
UNAVAILABLE = (
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RayActorError,
    ActorUnavailableError,
)
MODEL_ERRORS = (BackPressureError, *UNAVAILABLE)


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str, details=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details or [], headers

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def copy(self) -> RequestError:
        return RequestError(self.status, self.code, self.message, list(self.details), self.headers)


def invalid_posts(message: str, details: list[dict]) -> RequestError:
    """Posts with inputs that cannot be used: 413 when one is over a size cap, else 422."""
    status = 413 if any(d["code"] in TOO_LARGE for d in details) else 422
    return RequestError(status, codes.INVALID_POSTS, message, details)


def media_too_large(budget: int) -> RequestError:
    """The image and audio bytes of one request over `max_request_image_bytes` (the code's name
    is older than audio)."""
    msg = f"the images and audio of this request are over {budget} bytes in all"
    return RequestError(413, codes.REQUEST_IMAGES_TOO_LARGE, msg)


def internal_error(index: int | None, why: str | None) -> dict:
    """A post's internal_error detail: the exception type only (its text may hold server paths
    or data; the trace is in the replica's log)."""
    kind = (why or "").split(":")[0] or "an exception"
    msg = f"this post failed on the server ({kind})"
    return {"index": index, "field": None, "code": codes.INTERNAL_ERROR, "message": msg}


def model_error(e: BaseException) -> RequestError:
    """A model call's failure (one of MODEL_ERRORS): its backpressure becomes a 503 (or 429) with
    Retry-After, a model that is gone (not deployed, restarting, its replica died) a 503."""
    if isinstance(e, BackPressureError):
        after = e.retry_after_s
        retry = {"Retry-After": str(math.ceil(after))} if after is not None else None
        return RequestError(
            e.status_code, codes.OVERLOADED, "at capacity, retry later", None, retry
        )
    logger.warning("the model is unavailable", exc_info=e)
    retry = {"Retry-After": "5"}
    return RequestError(503, codes.OVERLOADED, "the model is unavailable", None, retry)


class ErrorJSON(JSONResponse):
    """Error bodies echo client text (e.g. an unknown field's name): ASCII escapes render any
    string, a lone surrogate too, where UTF-8 would fail and turn the 4xx into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode()


def error_response(e: RequestError) -> JSONResponse:
    return ErrorJSON(e.body(), status_code=e.status, headers=e.headers)


def install_handlers(app: FastAPI) -> None:
    """Every exception a route (or a dependency, or the body cap) raises -> a JSON error body."""

    @app.exception_handler(RequestError)
    async def request_error(_: Request, e: RequestError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": ".".join(map(str, x.get("loc", ()))),
                "code": codes.MALFORMED_REQUEST,
                "message": x.get("msg"),
            }
            for x in e.errors()
        ]
        return error_response(
            RequestError(422, codes.MALFORMED_REQUEST, "malformed request", details)
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException) -> JSONResponse:
        code = codes.NOT_FOUND if e.status_code in (404, 405) else codes.MALFORMED_REQUEST
        return error_response(RequestError(e.status_code, code, str(e.detail), headers=e.headers))

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)  # the trace stays in the logs
        return error_response(RequestError(500, codes.INTERNAL_ERROR, "internal error"))

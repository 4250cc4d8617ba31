"""Bearer-token auth, failing closed: the token comes from the env var named by
`ServeCfg.auth_token_env` (unset: auth off; set but blank: a start-up error), and
`require_token(token)` is the FastAPI dependency that mmsent.serve.routes puts on its `/v1`
router, so every route there needs the token and a new one cannot forget it.

    token = auth_token(cfg.auth_token_env)     # in the replica's constructor: fails the start
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token(token))])
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request

from .. import codes
from .errors import RequestError


def auth_token(env: str | None) -> bytes | None:
    """The bearer token from the env var `env`; unset: None (auth off). Set but blank is a
    start-up error, not an open API (fail closed: e.g. a Secret whose key came out empty)."""
    value = os.environ.get(env) if env else None
    if value is None:
        return None
    if not value.strip():
        raise ValueError(
            f"auth_token_env: ${env} is set but empty; set it to a token, or unset it to turn "
            "auth off (the API will not start open by mistake)"
        )
    # stripped: a Secret's trailing newline would otherwise make every token wrong
    return value.strip().encode("utf-8", "surrogateescape")


def require_token(token: bytes | None) -> Callable[[Request], Awaitable[None]]:
    """A dependency that lets a request through only with `Authorization: Bearer <token>` (any
    request when `token` is None); else 401 with `WWW-Authenticate: Bearer`. Async, so it runs on
    the event loop, not in FastAPI's thread pool; it takes only the Request, so the OpenAPI
    document does not change."""

    async def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token):
            return
        msg, headers = "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
        raise RequestError(401, codes.UNAUTHORIZED, msg, None, headers)

    return authorize

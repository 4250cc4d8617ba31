"""The ingress's FastAPI app: its routes, each a parse -> `Scorer` call; the JSON errors
(mmsent.serve.errors), the body cap and per-request metrics (mmsent.serve.middleware). Built
inside each replica by `SentimentAPI.__serve_build_asgi_app__`, so routes close over that
replica's config, scorer and metrics instead of module globals. Every route on the `/v1` router
needs the bearer token (a router dependency: a new route there cannot forget it); `/healthz`,
`/docs` and `/openapi.json` are open.

    POST /v1/sentiment   a post, a list of posts, or a multipart upload -> predictions
    GET  /v1/model       the model card
    GET  /healthz        the model is loaded and answers (a cached ping: no slot in its queue)
    GET  /docs           OpenAPI UI            GET /openapi.json
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request

from .. import __version__
from ..config import ServeCfg
from .errors import install_handlers
from .metrics import IngressMetrics
from .middleware import BodyLimit, Observe
from .parse import read_posts
from .scoring import Scorer
from .wire import ERROR_RESPONSES, ErrorBody, Health, ModelCard, PostIn, Prediction, Predictions


def build_api(
    cfg: ServeCfg, scorer: Scorer, authorize: Callable, metrics: IngressMetrics
) -> FastAPI:
    """`authorize`: the auth dependency of every /v1 route (mmsent.serve.auth.require_token)."""
    app = FastAPI(
        title="mmsent sentiment API",
        version=__version__,
        redoc_url=None,
        description="Multimodal (text, image, tabular, audio) sentiment of social-media posts.",
    )
    # every route on `v1` needs the token; open ones (health) go on `app` itself
    v1 = APIRouter(
        prefix="/v1", dependencies=[Depends(authorize)], responses={401: ERROR_RESPONSES[401]}
    )

    @v1.post(
        "/sentiment",
        response_model=None,
        openapi_extra=_request_body(cfg.max_posts),
        responses={200: {"model": Prediction | Predictions}, **ERROR_RESPONSES},
    )
    async def sentiment(request: Request) -> JSONResponse:
        """Score one post (-> a prediction) or a list of posts (-> `{"predictions": [...]}`)."""
        posts, single = await read_posts(request, cfg)
        results = await scorer.score(posts, single)
        return JSONResponse(results[0] if single else {"predictions": results})

    @v1.get("/model", response_model=ModelCard)
    async def model_card() -> dict:
        return await scorer.card()

    app.include_router(v1)

    @app.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}})
    async def healthz() -> dict:
        """200 once the model deployment has loaded the checkpoint and answers (open: no token;
        answered from a model ping at most `health_cache_s` old)."""
        return {"status": "ok", "model": await scorer.ping()}

    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)  # outermost: sees every answer
    return app


def _request_body(max_posts: int) -> dict:
    """Both content types of the body, for the OpenAPI document (the route reads it itself)."""
    post = PostIn.model_json_schema()
    posts = {"type": "array", "items": post, "minItems": 1, "maxItems": max_posts}
    form = {
        "type": "object",
        "properties": {
            "image": {"type": "string", "format": "binary"},
            "audio": {"type": "string", "format": "binary"},
            "text": {"type": "string"},
            "id": {"type": "string"},
            "image_url": {"type": "string"},
            "audio_url": {"type": "string"},
            "tabular": {"type": "string", "description": "a JSON object: column -> value"},
        },
    }
    content = {
        "application/json": {"schema": {"anyOf": [post, posts]}},
        "multipart/form-data": {"schema": form},
    }
    return {"requestBody": {"required": True, "content": content}}

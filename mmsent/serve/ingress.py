"""`SentimentAPI`: the ingress deployment (CPU). It parses requests, fetches image URLs behind the
SSRF guard, runs the one Preprocessor, and calls `SentimentModel` through a DeploymentHandle; the
FastAPI app (mmsent.serve.api) is built per replica. Options here are defaults that a Serve
config's `deployments:` entry overrides (mmsent/presets/serve/default.yaml).

Bounds that keep one request from starving the others (ServeCfg): image bytes per request
(`max_request_image_bytes`, fetches included), decoded pixels per image (`max_image_pixels`,
refused before decoding), images decoded at once per replica (`decode_slots`: a request's
images take turns with everyone else's, one slot per image). `/healthz` answers from a cached
model ping (`health_cache_s`), so a flood of health checks costs the model one call a second.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hmac
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle

from .. import codes
from ..config import ModelCfg, ServeCfg, from_dict
from ..models.checkpoint import read_meta
from ..preprocess import pack_pixels
from .inputs import (
    Post,
    RequestError,
    check_scored,
    load_images,
    preprocess,
    serve_preprocessor,
)
from .loopback import keep_replica_grpc_on_loopback
from .metrics import IngressMetrics
from .model import BACKPRESSURE

logger = logging.getLogger("ray.serve")
# the model replica is gone or restarting (e.g. killed by a post): retry later, not a 500
UNAVAILABLE = (DeploymentUnavailableError, ReplicaUnavailableError, RayActorError,
               ActorUnavailableError)  # fmt: skip


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


@serve.deployment(max_ongoing_requests=64, max_queued_requests=128, backpressure_config=BACKPRESSURE,
                  ray_actor_options={"num_cpus": 1})  # fmt: skip
@serve.ingress()  # the FastAPI app is built per replica by __serve_build_asgi_app__
class SentimentAPI:
    def __init__(self, model: DeploymentHandle, cfg: ServeCfg):
        self.token = auth_token(cfg.auth_token_env)  # first: a bad token fails the start at once
        keep_replica_grpc_on_loopback()
        self.model, self.cfg = model, cfg
        model_cfg = from_dict(ModelCfg, read_meta(cfg.model_dir)["model"])
        self.labels, self.modalities = model_cfg.labels, model_cfg.modalities()
        # tokenizer and decoding only; the weights live in SentimentModel
        self.pre = serve_preprocessor(model_cfg, cfg)
        # one call fixes the fast tokenizer's truncation/padding state before threads share it
        self.pre(["warm-up"])
        cap = min(cfg.fetch.max_bytes, cfg.max_image_bytes)
        self.fetch_cfg = dataclasses.replace(cfg.fetch, max_bytes=cap)
        self.fetch_pool = ThreadPoolExecutor(32, thread_name_prefix="fetch")  # slow hosts wait here
        # requests with images preprocess here, waiting for decode slots without holding the
        # default executor (which parses large bodies)
        self.decode_pool = ThreadPoolExecutor(16, thread_name_prefix="decode")
        self.metrics = IngressMetrics()
        self._health: tuple[float, dict | RequestError] | None = None  # (when, answer)
        self._pinging: asyncio.Task | None = None

    def __serve_build_asgi_app__(self):
        from .api import build_api

        return build_api(self)

    def authorize(self, request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token):
            return
        msg, headers = "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
        raise RequestError(401, codes.UNAUTHORIZED, msg, None, headers)

    async def score(self, posts: list[Post], single: bool) -> list[dict]:
        loop = asyncio.get_running_loop()
        images, known = [p.image for p in posts], [None] * len(posts)
        budget = self.cfg.max_request_image_bytes
        if any(p.image_url is not None for p in posts):
            images, known = await loop.run_in_executor(
                self.fetch_pool, load_images, posts, self.fetch_cfg, budget
            )
            for code in filter(codes.is_error, known):
                self.metrics.fetch_errors.inc(tags={"code": code})
        args = (self.pre, posts, images, known, single)
        # images decode in a thread (Pillow lets go of the GIL); text alone is tokenized at once
        with_images = any(image is not None for image in images)
        if with_images:
            batch = await loop.run_in_executor(self.decode_pool, preprocess, *args)
        else:
            batch = preprocess(*args)
        columns = await self._call(self.model.predict.remote(pack_pixels(batch)))
        check_scored(columns, single)
        out = []
        for post, row in zip(posts, codes.rows_from_columns(columns), strict=True):
            self.metrics.posts.inc(tags={"modalities": row["modalities"] or "none"})
            pred = codes.prediction_to_json(row, self.labels, self.modalities)
            out.append(pred if post.id is None else {"id": post.id, **pred})
        return out

    async def ping(self) -> dict:
        """The model's name and version, from a ping at most `health_cache_s` old. Single flight:
        health checks that come while a ping runs wait for that one, so the model sees about one
        ping per `health_cache_s` however many checks arrive, and scoring keeps its queue."""
        fresh = self._health and time.monotonic() - self._health[0] <= self.cfg.health_cache_s
        if not fresh:
            if self._pinging is None:
                # in a context of its own: the shared ping is no child of the request that
                # started it, so Serve does not cancel it when that client goes away
                ping = self._ping_model()
                self._pinging = asyncio.create_task(ping, context=contextvars.Context())
            await asyncio.shield(self._pinging)  # a caller that goes away leaves the ping running
        answer = self._health[1]
        if isinstance(answer, RequestError):  # a fresh copy for each caller's response
            raise RequestError(answer.status, answer.code, answer.message, None, answer.headers)
        return answer

    async def _ping_model(self) -> None:
        answer = RequestError(503, codes.OVERLOADED, "the model does not answer")
        try:
            answer = await self._call(asyncio.wait_for(self.model.ping.remote(), 10))
        except RequestError as e:
            answer = e
        except Exception:  # noqa: BLE001 - any failure means unhealthy, not a 500
            logger.warning("health check: the model does not answer", exc_info=True)
        finally:  # even when cancelled (the replica stops): the next check pings again
            self._health, self._pinging = (time.monotonic(), answer), None

    async def card(self) -> dict:
        card = await self._call(self.model.card.remote())
        names = ("max_posts", "max_body_bytes", "max_image_bytes", "max_request_image_bytes")
        limits = {k: getattr(self.cfg, k) for k in names}
        limits["max_image_pixels"] = self.pre.cfg.preprocess.max_image_pixels  # the lower cap
        return {**card, "limits": {**limits, "image_url_schemes": self.cfg.fetch.schemes}}

    async def _call(self, response):
        """Await a model call; its backpressure becomes a JSON 503/429 with Retry-After, a model
        that is gone (not deployed, restarting, its replica died) a 503."""
        try:
            return await response
        except BackPressureError as e:
            after = e.retry_after_s
            retry = {"Retry-After": str(int(np.ceil(after)))} if after is not None else None
            msg = "at capacity, retry later"
            raise RequestError(e.status_code, codes.OVERLOADED, msg, None, retry) from None
        except UNAVAILABLE:
            logger.warning("the model is unavailable", exc_info=True)
            retry = {"Retry-After": "5"}
            raise RequestError(
                503, codes.OVERLOADED, "the model is unavailable", None, retry
            ) from None

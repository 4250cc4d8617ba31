"""`SentimentAPI`: the ingress deployment (CPU). It parses requests, fetches image URLs behind the
SSRF guard, runs the one Preprocessor, and calls `SentimentModel` through a DeploymentHandle; the
FastAPI app (mmsent.serve.api) is built per replica. Options here are defaults that a Serve
config's `deployments:` entry overrides (configs/serve/default.yaml).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from .. import schema as S
from ..config import ModelCfg, ServeCfg, from_dict
from ..models.checkpoint import read_meta
from ..preprocess import Preprocessor, pack_pixels
from .inputs import Post, RequestError, load_images, preprocess
from .loopback import keep_replica_grpc_on_loopback
from .metrics import IngressMetrics
from .model import BACKPRESSURE

logger = logging.getLogger("ray.serve")


@serve.deployment(max_ongoing_requests=64, max_queued_requests=128, backpressure_config=BACKPRESSURE,
                  ray_actor_options={"num_cpus": 1})  # fmt: skip
@serve.ingress()  # the FastAPI app is built per replica by __serve_build_asgi_app__
class SentimentAPI:
    def __init__(self, model: DeploymentHandle, cfg: ServeCfg):
        keep_replica_grpc_on_loopback()
        self.model, self.cfg = model, cfg
        model_cfg = from_dict(ModelCfg, read_meta(cfg.model_dir)["model"])
        self.labels, self.modalities = model_cfg.labels, model_cfg.modalities()
        self.pre = Preprocessor(model_cfg)  # tokenizer only; the weights live in SentimentModel
        # one call fixes the fast tokenizer's truncation/padding state before threads share it
        self.pre(["warm-up"])
        cap = min(cfg.fetch.max_bytes, cfg.max_image_bytes)
        self.fetch_cfg = dataclasses.replace(cfg.fetch, max_bytes=cap)
        self.fetch_pool = ThreadPoolExecutor(32, thread_name_prefix="fetch")  # slow hosts wait here
        self.token = os.environ.get(cfg.auth_token_env or "") or None
        self.metrics = IngressMetrics()

    def __serve_build_asgi_app__(self):
        from .api import build_api

        return build_api(self)

    def authorize(self, request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), self.token.encode()):
            return
        msg, headers = "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
        raise RequestError(401, S.UNAUTHORIZED, msg, None, headers)

    async def score(self, posts: list[Post], single: bool) -> list[dict]:
        images, known = [p.image for p in posts], [None] * len(posts)
        if any(p.image_url is not None for p in posts):
            loop = asyncio.get_running_loop()
            images, known = await loop.run_in_executor(
                self.fetch_pool, load_images, posts, self.fetch_cfg
            )
            for code in filter(S.is_error, known):
                self.metrics.fetch_errors.inc(tags={"code": code})
        args = (self.pre, posts, images, known, single)
        # images decode in a thread (Pillow lets go of the GIL); text alone is tokenized at once
        with_images = any(image is not None for image in images)
        batch = await asyncio.to_thread(preprocess, *args) if with_images else preprocess(*args)
        columns = await self._call(self.model.predict.remote(pack_pixels(batch)))
        out = []
        for post, row in zip(posts, S.rows_from_columns(columns), strict=True):
            self.metrics.posts.inc(tags={"modalities": row["modalities"] or "none"})
            pred = S.prediction_to_json(row, self.labels, self.modalities)
            out.append(pred if post.id is None else {"id": post.id, **pred})
        return out

    async def ping(self) -> dict:
        try:
            return await self._call(asyncio.wait_for(self.model.ping.remote(), 10))
        except RequestError:
            raise
        except Exception:  # noqa: BLE001 - any failure means unhealthy, not a 500
            logger.warning("health check: the model does not answer", exc_info=True)
            raise RequestError(503, S.OVERLOADED, "the model does not answer") from None

    async def card(self) -> dict:
        card = await self._call(self.model.card.remote())
        names = ("max_posts", "max_body_bytes", "max_image_bytes")
        limits = {k: getattr(self.cfg, k) for k in names}
        return {**card, "limits": {**limits, "image_url_schemes": self.cfg.fetch.schemes}}

    async def _call(self, response):
        """Await a model call; its backpressure becomes a JSON 503/429 with Retry-After."""
        try:
            return await response
        except BackPressureError as e:
            after = e.retry_after_s
            retry = {"Retry-After": str(int(np.ceil(after)))} if after is not None else None
            msg = "at capacity, retry later"
            raise RequestError(e.status_code, S.OVERLOADED, msg, None, retry) from None
        except DeploymentUnavailableError:
            retry = {"Retry-After": "5"}
            raise RequestError(503, S.OVERLOADED, "the model is unavailable", None, retry) from None

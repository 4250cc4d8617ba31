"""`Scorer`: posts -> image bytes (mmsent.serve.images) -> the one Preprocessor -> the model
deployment, through its DeploymentHandle -> prediction JSON. The routes call it; it calls only
the model. A post whose input cannot be used, or that the model fails on alone, fails the request
with a 4xx naming it; a model that is busy or away is a 503 (mmsent.serve.errors).

    scorer = Scorer(model_handle, cfg, metrics)     # once per ingress replica
    predictions = await scorer.score(posts, single)
    await scorer.ping(), await scorer.card()         # /healthz (cached), /v1/model

Bounds that keep one request from starving the others (ServeCfg): image bytes per request
(`max_request_image_bytes`, fetches included), decoded pixels per image (`max_image_pixels`,
refused before decoding), images decoded at once per replica (`decode_slots`: a request's
images take turns with everyone else's, one slot per image).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray.serve.handle import DeploymentHandle

from .. import codes
from ..config import ModelCfg, ServeCfg, from_dict
from ..models.checkpoint import read_meta
from ..preprocess import Preprocessor, pack_pixels
from .errors import MODEL_ERRORS, RequestError, internal_error, invalid_posts, model_error
from .health import HealthCache
from .images import load_images
from .metrics import IngressMetrics
from .parse import Post


class Scorer:
    def __init__(self, model: DeploymentHandle, cfg: ServeCfg, metrics: IngressMetrics):
        self.model, self.cfg, self.metrics = model, cfg, metrics
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
        self.health = HealthCache(self._ping_model, cfg.health_cache_s)

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
        """The model's name and version, from a ping at most `health_cache_s` old (shared)."""
        return await self.health.get()

    async def _ping_model(self) -> dict:
        return await self._call(self.model.ping.remote())

    async def card(self) -> dict:
        card = await self._call(self.model.card.remote())
        names = ("max_posts", "max_body_bytes", "max_image_bytes", "max_request_image_bytes")
        limits = {k: getattr(self.cfg, k) for k in names}
        limits["max_image_pixels"] = self.pre.cfg.preprocess.max_image_pixels  # the lower cap
        return {**card, "limits": {**limits, "image_url_schemes": self.cfg.fetch.schemes}}

    async def _call(self, response):
        """Await a model call; its failures are 503s (or 429s) with Retry-After."""
        try:
            return await response
        except MODEL_ERRORS as e:
            raise model_error(e) from None


def serve_preprocessor(model_cfg: ModelCfg, cfg: ServeCfg) -> Preprocessor:
    """The ingress's Preprocessor: Serve's pixel cap where it is lower than the checkpoint's (it
    applies to the pixels actually decoded), and at most `decode_slots` images decoding at once,
    one slot per image, so the images of many requests take turns."""
    pixels = min(model_cfg.preprocess.max_image_pixels, cfg.max_image_pixels)
    capped = dataclasses.replace(model_cfg.preprocess, max_image_pixels=pixels)
    model_cfg = dataclasses.replace(model_cfg, preprocess=capped)
    return Preprocessor(model_cfg, decode_slots=threading.BoundedSemaphore(cfg.decode_slots))


def preprocess(pre: Preprocessor, posts: list[Post], images, known, single: bool) -> dict:
    """The model inputs of `posts`; a RequestError if any post has an input that cannot be used
    (or made the Preprocessor's row boundary catch an exception: internal_error)."""
    batch = pre([p.text for p in posts], images, known)
    usable = np.zeros(len(posts), dtype=bool)
    for key in ("has_text", "has_image"):
        usable |= batch.get(key, False)
    details = []
    rows = zip(batch["text_status"], batch["image_status"], batch["error_detail"], strict=True)
    for i, (text, image, why) in enumerate(rows):
        where = None if single else i
        if text == codes.INTERNAL_ERROR:  # the whole post failed, not its text
            details.append(internal_error(where, why))
            continue
        found = [("text", text)] if codes.is_error(text) and text != codes.EMPTY_TEXT else []
        found += [(posts[i].source, image)] if codes.is_error(image) else []
        if not found and not usable[i]:
            found = [(None, codes.NO_USABLE_INPUT)]
        details += [{"index": where, "field": f, "code": c} for f, c in found]
    if details:
        raise invalid_posts("some posts have inputs that cannot be used", details)
    return batch


def check_scored(columns: dict[str, np.ndarray], single: bool) -> None:
    """A post that the model failed on alone (its error boundary: internal_error) fails the
    request as an unusable input does: a 422 naming it, never a 500."""
    rows = zip(columns["error"], columns["error_detail"], strict=True)
    details = [
        internal_error(None if single else i, why)
        for i, (error, why) in enumerate(rows)
        if error == codes.INTERNAL_ERROR
    ]
    if details:
        raise RequestError(
            422, codes.INVALID_POSTS, "the model could not score some posts", details
        )

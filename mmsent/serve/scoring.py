"""`Scorer`: posts -> media bytes (mmsent.serve.media) -> the one Preprocessor -> the model
deployment, through its DeploymentHandle -> prediction JSON. The routes call it; it calls only
the model. A post whose input cannot be used, or that the model fails on alone, fails the request
with a 4xx naming it; a model that is busy or away is a 503 (mmsent.serve.errors).

    scorer = Scorer(model_handle, cfg, metrics)     # once per ingress replica
    predictions = await scorer.score(posts, single)
    await scorer.ping(), await scorer.card()         # /healthz (cached), /v1/model

Bounds that keep one request from starving the others (ServeCfg): image and audio bytes per
request (`max_request_image_bytes`, fetches included), decoded pixels per image
(`max_image_pixels`, refused before decoding), images and clips decoded at once per replica
(`decode_slots`: a request's media take turns with everyone else's, one slot per image or clip).
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
from ..preprocess import Preprocessor, pack_batch
from .errors import MODEL_ERRORS, RequestError, internal_error, invalid_posts, model_error
from .health import HealthCache
from .media import Media, load_media
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
        self.caps = fetch_caps(self.pre.cfg, cfg)
        self.fetch_pool = ThreadPoolExecutor(32, thread_name_prefix="fetch")  # slow hosts wait here
        # requests with media preprocess here, waiting for decode slots without holding the
        # default executor (which parses large bodies)
        self.decode_pool = ThreadPoolExecutor(16, thread_name_prefix="decode")
        self.health = HealthCache(self._ping_model, cfg.health_cache_s)

    async def score(self, posts: list[Post], single: bool) -> list[dict]:
        loop = asyncio.get_running_loop()
        args = (posts, self.cfg.fetch, self.caps, self.cfg.max_request_image_bytes)
        if any(p.media[m].url is not None for p in posts for m in self.caps if m in p.media):
            media = await loop.run_in_executor(self.fetch_pool, load_media, *args)
            for _, known in media.values():
                for code in filter(codes.is_error, known):
                    self.metrics.fetch_errors.inc(tags={"code": code})
        else:
            media = load_media(*args)
        args = (self.pre, posts, media, single)
        # media decode in a thread (Pillow and libsndfile let go of the GIL); text alone (and
        # tabular values) are preprocessed at once
        if any(b is not None for data, _ in media.values() for b in data):
            batch = await loop.run_in_executor(self.decode_pool, preprocess, *args)
        else:
            batch = preprocess(*args)
        columns = await self._call(self.model.predict.remote(pack_batch(batch)))
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
        audio = self.pre.cfg.audio  # the lower cap too (a model without audio: Serve's)
        clip = audio.features.max_audio_bytes if audio else self.cfg.max_audio_bytes
        limits["max_audio_bytes"] = clip
        return {**card, "limits": {**limits, "image_url_schemes": self.cfg.fetch.schemes}}

    async def _call(self, response):
        """Await a model call; its failures are 503s (or 429s) with Retry-After."""
        try:
            return await response
        except MODEL_ERRORS as e:
            raise model_error(e) from None


def serve_preprocessor(model_cfg: ModelCfg, cfg: ServeCfg) -> Preprocessor:
    """The ingress's Preprocessor: Serve's pixel and audio byte caps where they are lower than
    the checkpoint's (they apply to what is actually decoded), and at most `decode_slots` images
    or clips decoding at once, one slot each, so the media of many requests take turns."""
    pixels = min(model_cfg.preprocess.max_image_pixels, cfg.max_image_pixels)
    capped = dataclasses.replace(model_cfg.preprocess, max_image_pixels=pixels)
    model_cfg = dataclasses.replace(model_cfg, preprocess=capped)
    if model_cfg.audio is not None:
        feats = model_cfg.audio.features
        clip = dataclasses.replace(
            feats, max_audio_bytes=min(feats.max_audio_bytes, cfg.max_audio_bytes)
        )
        audio = dataclasses.replace(model_cfg.audio, features=clip)
        model_cfg = dataclasses.replace(model_cfg, audio=audio)
    return Preprocessor(model_cfg, decode_slots=threading.BoundedSemaphore(cfg.decode_slots))


def fetch_caps(model_cfg: ModelCfg, cfg: ServeCfg) -> dict[str, int]:
    """The byte cap of one fetch, per medium the model reads (`model_cfg`: the serve_preprocessor's,
    caps applied); the others are not fetched."""
    caps = {"image": cfg.max_image_bytes} if model_cfg.image is not None else {}
    if model_cfg.audio is not None:
        caps["audio"] = model_cfg.audio.features.max_audio_bytes
    return {m: min(cap, cfg.fetch.max_bytes) for m, cap in caps.items()}


def preprocess(pre: Preprocessor, posts: list[Post], media: Media, single: bool) -> dict:
    """The model inputs of `posts`; a RequestError if any post has an input that cannot be used
    (or made the Preprocessor's row boundary catch an exception: internal_error)."""
    (images, image_status), (audio, audio_status) = media["image"], media["audio"]
    batch = pre(
        [p.text for p in posts],
        images,
        image_status,
        audio=audio,
        audio_status=audio_status,
        tabular=[p.tabular for p in posts],
    )
    modalities = codes.status_modalities(pre.cfg.modalities())
    usable = np.zeros(len(posts), dtype=bool)
    for m in modalities:
        usable |= batch.get(f"has_{m}", False)
    details = []
    for i, post in enumerate(posts):
        where, why = None if single else i, batch["error_detail"][i]
        if batch["text_status"][i] == codes.INTERNAL_ERROR:  # the whole post failed, not its text
            details.append(internal_error(where, why))
            continue
        found = []
        for m in modalities:
            code = batch[f"{m}_status"][i]
            if codes.is_error(code) and code != codes.EMPTY_TEXT:
                medium = post.media.get(m)
                found.append({"index": where, "field": medium.field if medium else m, "code": code})
                if code == codes.TABULAR_INVALID:
                    found[-1]["message"] = why  # which columns (the model's names) were junk
        if not found and not usable[i]:
            found = [{"index": where, "field": None, "code": codes.NO_USABLE_INPUT}]
        details += found
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

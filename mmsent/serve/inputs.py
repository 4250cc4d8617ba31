"""Request -> posts -> model inputs, for the ingress. Whatever a client can get wrong ends as a
`RequestError` (a 4xx with a JSON body) before the model is called; nothing here raises anything else.

    posts, single = parse_json(body, cfg)                # or: await parse_multipart(request, cfg)
    images, known = load_images(posts, fetch_cfg)        # given bytes, or fetched URLs (SSRF guard)
    batch = preprocess(pre, posts, images, known)        # the one Preprocessor; 413/422 if unusable
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from .. import schema as S
from ..config import FetchCfg, ServeCfg
from ..io.fetch import fetch_many
from ..preprocess import Preprocessor
from .schemas import PostIn

TOO_LARGE = {S.IMAGE_BYTES_TOO_LARGE, S.IMAGE_TOO_LARGE}


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str, details=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details or [], headers

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


@dataclass
class Post:
    id: str | int | None = None
    text: str | None = None
    image: bytes | None = None  # uploaded or base64-decoded bytes
    image_url: str | None = None
    source: str = "image"  # the request field the image came from, for error details


def parse_json(body: bytes, cfg: ServeCfg) -> tuple[list[Post], bool]:
    """A post object or a list of them -> (posts, single)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays
        raise RequestError(422, S.MALFORMED_REQUEST, "the body is not valid JSON") from None
    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list) or not items:
        raise RequestError(422, S.MALFORMED_REQUEST, "expected a post or a non-empty list of posts")
    if len(items) > cfg.max_posts:
        msg = f"{len(items)} posts in one request; at most {cfg.max_posts}"
        raise RequestError(422, S.TOO_MANY_POSTS, msg)
    valid, malformed = [], []
    for i, item in enumerate(items):
        try:
            valid.append(PostIn.model_validate(item))
        except ValidationError as e:
            where = None if single else i
            malformed += [_detail(where, err) for err in e.errors(include_url=False)]
    if malformed:
        raise RequestError(422, S.MALFORMED_REQUEST, "malformed posts", malformed)
    posts, unusable = [], []
    for i, p in enumerate(valid):
        try:
            b64 = p.image_base64
            image = None if b64 is None else decode_base64(b64, cfg.max_image_bytes)
        except RequestError as e:
            image = None
            unusable.append({"index": None if single else i, "field": "image_base64",
                             "code": e.code, "message": e.message})  # fmt: skip
        posts.append(
            Post(p.id, p.text, image, p.image_url, "image_url" if p.image_url else "image_base64")
        )
    if unusable:
        status = 413 if any(d["code"] in TOO_LARGE for d in unusable) else 422
        raise RequestError(status, S.INVALID_POSTS, "some posts have unusable images", unusable)
    return posts, single


def _detail(index: int | None, err: dict) -> dict:
    field = ".".join(str(x) for x in err.get("loc", ())) or None
    return {"index": index, "field": field, "code": S.MALFORMED_REQUEST, "message": err["msg"]}


def decode_base64(data: str, max_bytes: int) -> bytes:
    if data.startswith("data:"):  # data:image/png;base64,....
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(422, S.IMAGE_BASE64_INVALID, "a data: URL must be ;base64")
    data = "".join(data.split())  # line breaks of MIME-style base64
    if len(data) // 4 * 3 - data[-2:].count("=") > max_bytes:
        raise RequestError(413, S.IMAGE_BYTES_TOO_LARGE, f"image over {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, S.IMAGE_BASE64_INVALID, "image_base64 is not base64") from None


async def parse_multipart(request: Request, cfg: ServeCfg) -> Post:
    """Fields: `image` (a file part), `text`, `id`; or `image_url` / `image_base64` for the image."""
    try:
        form = await request.form(max_files=1, max_fields=8)
    except (HTTPException, MultiPartException) as e:
        why = getattr(e, "detail", None) or getattr(e, "message", "")
        raise RequestError(422, S.MALFORMED_REQUEST, f"malformed multipart body: {why}") from None
    try:
        upload = form.get("image")
        fields = {k: v for k, v in form.multi_items() if k != "image"}
        if not isinstance(upload, UploadFile | None) or not all(
            isinstance(v, str) for v in fields.values()
        ):
            raise RequestError(422, S.MALFORMED_REQUEST, "`image` must be a file, the rest text")
        if upload is None:
            return parse_json(json.dumps(fields).encode(), cfg)[0][0]
        if "image_url" in fields or "image_base64" in fields:
            raise RequestError(422, S.MALFORMED_REQUEST, "one image per post: a file or a URL")
        # an empty image_base64 stands in for the file, so the rules of JSON posts apply
        [post], _ = parse_json(json.dumps({**fields, "image_base64": ""}).encode(), cfg)
        post.image, post.source = await upload.read(cfg.max_image_bytes + 1), "image"
        if len(post.image) > cfg.max_image_bytes:
            detail = {"index": None, "field": "image", "code": S.IMAGE_BYTES_TOO_LARGE}
            msg = f"image over {cfg.max_image_bytes} bytes"
            raise RequestError(413, S.INVALID_POSTS, msg, [detail])
        return post
    finally:
        await form.close()


def load_images(posts: list[Post], cfg: FetchCfg) -> tuple[list[bytes | None], list[str | None]]:
    """Image bytes per post (given, or fetched by URL) and a fetch status per post (None: fine)."""
    images: list[bytes | None] = [p.image for p in posts]
    known: list[str | None] = [None] * len(posts)
    todo = [i for i, p in enumerate(posts) if p.image_url is not None]
    if todo:
        urls = [posts[i].image_url for i in todo]
        for i, got in zip(todo, fetch_many(urls, cfg), strict=True):
            images[i], known[i] = (got.data, None) if got.status == S.OK else (None, got.status)
    return images, known


def preprocess(pre: Preprocessor, posts: list[Post], images, known, single: bool) -> dict:
    """The model inputs of `posts`; a RequestError if any post has an input that cannot be used."""
    batch = pre([p.text for p in posts], images, known)
    usable = np.zeros(len(posts), dtype=bool)
    for key in ("has_text", "has_image"):
        usable |= batch.get(key, False)
    details = []
    statuses = zip(batch["text_status"], batch["image_status"], strict=True)
    for i, (text, image) in enumerate(statuses):
        found = [("text", text)] if S.is_error(text) and text != S.EMPTY_TEXT else []
        found += [(posts[i].source, image)] if S.is_error(image) else []
        if not found and not usable[i]:
            found = [(None, S.NO_USABLE_INPUT)]
        details += [{"index": None if single else i, "field": f, "code": c} for f, c in found]
    if details:
        status = 413 if any(d["code"] in TOO_LARGE for d in details) else 422
        raise RequestError(
            status, S.INVALID_POSTS, "some posts have inputs that cannot be used", details
        )
    return batch

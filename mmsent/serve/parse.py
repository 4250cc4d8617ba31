"""The request body -> `Post`s: JSON (a post or a list of them) or a multipart upload, checked
against the wire model (mmsent.serve.wire.PostIn) and the request caps. Whatever a client gets
wrong is a `RequestError` (4xx) naming each post and field; nothing else escapes.

    posts, single = await read_posts(request, cfg)   # the route's one call
    posts, single = parse_json(body, cfg)            # JSON bytes alone (tests, fuzzing)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from .. import codes
from ..boundary import describe
from ..config import ServeCfg
from .errors import RequestError, images_too_large, internal_error, invalid_posts
from .wire import PostIn

FIELD_CHARS = 100  # of a field name echoed in an error detail (a client's unknown key)
INLINE_BYTES = 64 * 1024  # JSON bodies up to this size are parsed on the event loop


@dataclass
class Post:
    id: str | int | None = None
    text: str | None = None
    image: bytes | None = None  # uploaded or base64-decoded bytes
    image_url: str | None = None
    source: str = "image"  # the request field the image came from, for error details


async def read_posts(request: Request, cfg: ServeCfg) -> tuple[list[Post], bool]:
    """(posts, single): single when the body is one post (a JSON object or a multipart form)."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return [await parse_multipart(request, cfg)], True
    # JSON, whatever the content type says (curl -d sends form-urlencoded)
    body = await request.body()
    if len(body) <= INLINE_BYTES:  # parsed at once: a thread hop would cost more
        return parse_json(body, cfg)
    return await asyncio.to_thread(parse_json, body, cfg)


def parse_json(body: bytes, cfg: ServeCfg) -> tuple[list[Post], bool]:
    """A post object or a list of them -> (posts, single)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays
        raise RequestError(422, codes.MALFORMED_REQUEST, "the body is not valid JSON") from None
    single = isinstance(data, dict)
    items = [data] if single else data
    if not isinstance(items, list) or not items:
        raise RequestError(
            422, codes.MALFORMED_REQUEST, "expected a post or a non-empty list of posts"
        )
    if len(items) > cfg.max_posts:
        msg = f"{len(items)} posts in one request; at most {cfg.max_posts}"
        raise RequestError(422, codes.TOO_MANY_POSTS, msg)
    valid, malformed = [], []
    for i, item in enumerate(items):
        try:
            valid.append(PostIn.model_validate(item))
        except ValidationError as e:
            where = None if single else i
            malformed += [_detail(where, err) for err in e.errors(include_url=False)]
        except Exception as e:  # noqa: BLE001 - the boundary: one post's failure is its code
            malformed.append(internal_error(None if single else i, describe(e)))
    if malformed:
        raise RequestError(422, codes.MALFORMED_REQUEST, "malformed posts", malformed)
    posts, unusable, image_bytes = [], [], 0
    for i, p in enumerate(valid):
        image, where = None, None if single else i
        try:
            b64 = p.image_base64
            image = None if b64 is None else decode_base64(b64, cfg.max_image_bytes)
        except RequestError as e:
            unusable.append(
                {"index": where, "field": "image_base64", "code": e.code, "message": e.message}
            )
        except Exception as e:  # noqa: BLE001 - the boundary, as above
            unusable.append(internal_error(where, describe(e)))
        image_bytes += len(image or b"")
        if image_bytes > cfg.max_request_image_bytes:  # at once: no more decoding
            raise images_too_large(cfg.max_request_image_bytes)
        source = "image_url" if p.image_url else "image_base64"
        posts.append(Post(p.id, p.text, image, p.image_url, source))
    if unusable:
        raise invalid_posts("some posts have unusable images", unusable)
    return posts, single


def _detail(index: int | None, err: dict) -> dict:
    field = ".".join(str(x) for x in err.get("loc", ()))[:FIELD_CHARS] or None
    return {"index": index, "field": field, "code": codes.MALFORMED_REQUEST, "message": err["msg"]}


def decode_base64(data: str, max_bytes: int) -> bytes:
    if data.startswith("data:"):  # data:image/png;base64,....
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(422, codes.IMAGE_BASE64_INVALID, "a data: URL must be ;base64")
    data = "".join(data.split())  # line breaks of MIME-style base64
    if len(data) // 4 * 3 - data[-2:].count("=") > max_bytes:
        raise RequestError(413, codes.IMAGE_BYTES_TOO_LARGE, f"image over {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, codes.IMAGE_BASE64_INVALID, "image_base64 is not base64") from None


async def parse_multipart(request: Request, cfg: ServeCfg) -> Post:
    """Fields: `image` (a file part), `text`, `id`; or `image_url` / `image_base64` for the image."""
    try:
        form = await request.form(max_files=1, max_fields=8)
    except RequestError:
        raise  # the body cap (mmsent.serve.routes.BodyLimit), hit while the body streams in
    except Exception as e:  # noqa: BLE001 - whatever the form parser trips on is a malformed body
        why = getattr(e, "detail", None) or getattr(e, "message", None) or type(e).__name__
        raise RequestError(
            422, codes.MALFORMED_REQUEST, f"malformed multipart body: {why}"
        ) from None
    try:
        upload = form.get("image")
        fields = {k: v for k, v in form.multi_items() if k != "image"}
        if not isinstance(upload, UploadFile | None) or not all(
            isinstance(v, str) for v in fields.values()
        ):
            raise RequestError(
                422, codes.MALFORMED_REQUEST, "`image` must be a file, the rest text"
            )
        if upload is None:
            return parse_json(json.dumps(fields).encode(), cfg)[0][0]
        if "image_url" in fields or "image_base64" in fields:
            raise RequestError(422, codes.MALFORMED_REQUEST, "one image per post: a file or a URL")
        # an empty image_base64 stands in for the file, so the rules of JSON posts apply
        [post], _ = parse_json(json.dumps({**fields, "image_base64": ""}).encode(), cfg)
        post.image, post.source = await upload.read(cfg.max_image_bytes + 1), "image"
        if len(post.image) > cfg.max_image_bytes:
            detail = {"index": None, "field": "image", "code": codes.IMAGE_BYTES_TOO_LARGE}
            msg = f"image over {cfg.max_image_bytes} bytes"
            raise RequestError(413, codes.INVALID_POSTS, msg, [detail])
        return post
    finally:
        await form.close()

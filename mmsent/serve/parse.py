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
from dataclasses import dataclass, field

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from .. import codes
from ..boundary import describe
from ..config import ServeCfg
from .errors import RequestError, internal_error, invalid_posts, media_too_large
from .wire import MEDIA, PostIn

# per medium: the code of a `<m>_base64` that is not base64, and of bytes over its cap
BASE64_INVALID = {"image": codes.IMAGE_BASE64_INVALID, "audio": codes.AUDIO_BASE64_INVALID}
BYTES_TOO_LARGE = {"image": codes.IMAGE_BYTES_TOO_LARGE, "audio": codes.AUDIO_BYTES_TOO_LARGE}
FIELD_CHARS = 100  # of a field name echoed in an error detail (a client's unknown key)
INLINE_BYTES = 64 * 1024  # JSON bodies up to this size are parsed on the event loop


@dataclass
class Medium:
    """An image or an audio clip of a post: its bytes (uploaded or base64-decoded) or its URL."""

    data: bytes | None = None
    url: str | None = None
    field: str = ""  # the request field it came from (`image`, `audio_url`, ...), for error details


@dataclass
class Post:
    id: str | int | None = None
    text: str | None = None
    tabular: dict | None = None  # column -> value, as sent: the Preprocessor judges the values
    media: dict[str, Medium] = field(default_factory=dict)  # the media (wire.MEDIA) it carries


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
    posts, unusable, held = [], [], 0
    for i, p in enumerate(valid):
        post, where = Post(p.id, p.text, p.tabular), None if single else i
        for m in MEDIA:
            url, b64 = getattr(p, f"{m}_url"), getattr(p, f"{m}_base64")
            if url is not None:
                post.media[m] = Medium(url=url, field=f"{m}_url")
            elif b64 is not None:
                try:
                    data = decode_base64(b64, media_cap(cfg, m), m)
                except RequestError as e:
                    name, msg = f"{m}_base64", e.message
                    unusable.append({"index": where, "field": name, "code": e.code, "message": msg})
                    continue
                except Exception as e:  # noqa: BLE001 - the boundary, as above
                    unusable.append(internal_error(where, describe(e)))
                    continue
                post.media[m] = Medium(data, field=f"{m}_base64")
                held += len(data)
                if held > cfg.max_request_image_bytes:  # at once: no more decoding
                    raise media_too_large(cfg.max_request_image_bytes)
        posts.append(post)
    if unusable:
        raise invalid_posts("some posts have unusable media", unusable)
    return posts, single


def _detail(index: int | None, err: dict) -> dict:
    field = ".".join(str(x) for x in err.get("loc", ()))[:FIELD_CHARS] or None
    return {"index": index, "field": field, "code": codes.MALFORMED_REQUEST, "message": err["msg"]}


def media_cap(cfg: ServeCfg, medium: str) -> int:
    """The cap of one image or audio clip as it arrives (`max_image_bytes`, `max_audio_bytes`)."""
    return getattr(cfg, f"max_{medium}_bytes")


def decode_base64(data: str, max_bytes: int, medium: str = "image") -> bytes:
    invalid = BASE64_INVALID[medium]
    if data.startswith("data:"):  # data:image/png;base64,....
        head, _, data = data.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(422, invalid, "a data: URL must be ;base64")
    data = "".join(data.split())  # line breaks of MIME-style base64
    if len(data) // 4 * 3 - data[-2:].count("=") > max_bytes:
        raise RequestError(413, BYTES_TOO_LARGE[medium], f"{medium} over {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, invalid, f"{medium}_base64 is not base64") from None


async def parse_multipart(request: Request, cfg: ServeCfg) -> Post:
    """Parts: `text`, `id`, `tabular` (a JSON object); per medium (image, audio) a file part of
    its name, or a `<medium>_url` / `<medium>_base64` text part. One part per name."""
    try:
        form = await request.form(max_files=len(MEDIA), max_fields=8)
    except RequestError:
        raise  # the body cap (mmsent.serve.routes.BodyLimit), hit while the body streams in
    except Exception as e:  # noqa: BLE001 - whatever the form parser trips on is a malformed body
        why = getattr(e, "detail", None) or getattr(e, "message", None) or type(e).__name__
        raise RequestError(
            422, codes.MALFORMED_REQUEST, f"malformed multipart body: {why}"
        ) from None
    try:
        parts = form.multi_items()
        uploads = {k: v for k, v in parts if k in MEDIA}
        fields = {k: v for k, v in parts if k not in MEDIA}
        if (
            len(uploads) + len(fields) < len(parts)
            or not all(isinstance(v, UploadFile) for v in uploads.values())
            or not all(isinstance(v, str) for v in fields.values())
        ):
            msg = "one part per name: `image` and `audio` files, the rest text"
            raise RequestError(422, codes.MALFORMED_REQUEST, msg)
        if "tabular" in fields:
            fields["tabular"] = json_field(fields["tabular"], "tabular")
        for m in uploads:
            if f"{m}_url" in fields or f"{m}_base64" in fields:
                msg = f"one {m} per post: a file or a URL"
                raise RequestError(422, codes.MALFORMED_REQUEST, msg)
            fields[f"{m}_base64"] = ""  # stands in for the file: the rules of JSON posts apply
        [post], _ = parse_json(json.dumps(fields).encode(), cfg)
        for m, upload in uploads.items():
            cap = media_cap(cfg, m)
            data = await upload.read(cap + 1)
            if len(data) > cap:
                detail = {"index": None, "field": m, "code": BYTES_TOO_LARGE[m]}
                raise RequestError(413, codes.INVALID_POSTS, f"{m} over {cap} bytes", [detail])
            post.media[m] = Medium(data, field=m)
        return post
    finally:
        await form.close()


def json_field(text: str, name: str):
    """A multipart text part that holds JSON (`tabular`)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError(422, codes.MALFORMED_REQUEST, f"`{name}` is not JSON") from None

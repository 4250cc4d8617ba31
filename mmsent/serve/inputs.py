"""Request -> posts -> model inputs, and the model's output -> a check, for the ingress. Whatever a
client can get wrong ends as a `RequestError` (a 4xx with a JSON body); whatever one post makes
fail (validation, fetching, decoding, the model) is that post's code in the error's `details`.
Nothing here raises anything else.

    posts, single = parse_json(body, cfg)                 # or: await parse_multipart(request, cfg)
    images, known = load_images(posts, fetch_cfg, cfg.max_request_image_bytes)  # URLs: SSRF guard
    batch = preprocess(pre, posts, images, known, single)  # the one Preprocessor; 413/422 if unusable
    check_scored(columns, single)                          # a post the model failed on: 422
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from .. import codes
from ..boundary import describe
from ..config import FetchCfg, ModelCfg, ServeCfg
from ..io.fetch import Fetched, fetch
from ..preprocess import Preprocessor
from .wire import PostIn

TOO_LARGE = {codes.IMAGE_BYTES_TOO_LARGE, codes.IMAGE_TOO_LARGE}
FIELD_CHARS = 100  # of a field name echoed in an error detail (a client's unknown key)


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
        image = None
        try:
            b64 = p.image_base64
            image = None if b64 is None else decode_base64(b64, cfg.max_image_bytes)
        except RequestError as e:
            unusable.append({"index": None if single else i, "field": "image_base64",
                             "code": e.code, "message": e.message})  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the boundary, as above
            unusable.append(internal_error(None if single else i, describe(e)))
        image_bytes += len(image or b"")
        if image_bytes > cfg.max_request_image_bytes:  # at once: no more decoding
            raise images_too_large(cfg.max_request_image_bytes)
        posts.append(
            Post(p.id, p.text, image, p.image_url, "image_url" if p.image_url else "image_base64")
        )
    if unusable:
        status = 413 if any(d["code"] in TOO_LARGE for d in unusable) else 422
        raise RequestError(status, codes.INVALID_POSTS, "some posts have unusable images", unusable)
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
        raise  # the body cap (mmsent.serve.api.BodyLimit), hit while the body streams in
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


def serve_preprocessor(model_cfg: ModelCfg, cfg: ServeCfg) -> Preprocessor:
    """The ingress's Preprocessor: Serve's pixel cap where it is lower than the checkpoint's (it
    applies to the pixels actually decoded), and at most `decode_slots` images decoding at once,
    one slot per image, so the images of many requests take turns."""
    pixels = min(model_cfg.preprocess.max_image_pixels, cfg.max_image_pixels)
    capped = dataclasses.replace(model_cfg.preprocess, max_image_pixels=pixels)
    model_cfg = dataclasses.replace(model_cfg, preprocess=capped)
    return Preprocessor(model_cfg, decode_slots=threading.BoundedSemaphore(cfg.decode_slots))


def load_images(
    posts: list[Post], cfg: FetchCfg, budget: int
) -> tuple[list[bytes | None], list[str | None]]:
    """Image bytes per post (given, or fetched by URL) and a fetch status per post (None: fine).
    `budget`: image bytes the whole request may hold (given ones included); more: 413."""
    images: list[bytes | None] = [p.image for p in posts]
    known: list[str | None] = [None] * len(posts)
    left = budget - sum(len(b) for b in images if b is not None)
    todo = [i for i, p in enumerate(posts) if p.image_url is not None]
    if left < 0:
        raise images_too_large(budget)
    if todo:
        got = fetch_within([posts[i].image_url for i in todo], cfg, left)
        if got is None:
            raise images_too_large(budget)
        for i, g in zip(todo, got, strict=True):
            images[i], known[i] = (g.data, None) if g.status == codes.OK else (None, g.status)
    return images, known


def fetch_within(urls: list[str], cfg: FetchCfg, budget: int) -> list[Fetched] | None:
    """`fetch` every URL, at most `cfg.concurrency` at once, with at most `budget` bytes in flight:
    a fetch starts with its cap reserved (the per-image cap `cfg.max_bytes`, or what is left of
    `budget` once nothing else runs). None as soon as the URLs need more than `budget`; fetches
    still running then end on their own (each within the fetch deadline), unread."""
    out: list[Fetched | None] = [None] * len(urls)
    queue, running, free, full = deque(enumerate(urls)), {}, budget, cfg.max_bytes
    pool = ThreadPoolExecutor(max(1, min(cfg.concurrency, len(urls))), thread_name_prefix="fetch")
    try:
        while queue or running:
            while queue and len(running) < cfg.concurrency and (free >= full or not running):
                if free <= 0:
                    return None
                cap = min(full, free)
                i, url = queue.popleft()
                running[pool.submit(fetch, url, dataclasses.replace(cfg, max_bytes=cap))] = (i, cap)
                free -= cap
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i, cap = running.pop(future)
                got = out[i] = future.result()  # fetch never raises: its failures are statuses
                if got.status == codes.IMAGE_BYTES_TOO_LARGE and cap < full:
                    return None  # over what the request had left, not over the per-image cap
                free += cap - len(got.data or b"")
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def images_too_large(budget: int) -> RequestError:
    msg = f"the images of this request are over {budget} bytes in all"
    return RequestError(413, codes.REQUEST_IMAGES_TOO_LARGE, msg)


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
        status = 413 if any(d["code"] in TOO_LARGE for d in details) else 422
        raise RequestError(
            status, codes.INVALID_POSTS, "some posts have inputs that cannot be used", details
        )
    return batch


def check_scored(columns: dict[str, np.ndarray], single: bool) -> None:
    """A post that the model failed on alone (its error boundary: internal_error) fails the
    request as an unusable input does: a 422 naming it, never a 500."""
    rows = zip(columns["error"], columns["error_detail"], strict=True)
    details = [internal_error(None if single else i, why)
               for i, (error, why) in enumerate(rows) if error == codes.INTERNAL_ERROR]  # fmt: skip
    if details:
        raise RequestError(
            422, codes.INVALID_POSTS, "the model could not score some posts", details
        )


def internal_error(index: int | None, why: str | None) -> dict:
    """A post's internal_error detail: the exception type only (its text may hold server paths
    or data; the trace is in the replica's log)."""
    kind = (why or "").split(":")[0] or "an exception"
    msg = f"this post failed on the server ({kind})"
    return {"index": index, "field": None, "code": codes.INTERNAL_ERROR, "message": msg}

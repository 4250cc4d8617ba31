"""The image bytes of a request's posts: given ones as they are, `image_url`s fetched by
mmsent.io.fetch (SSRF guard, deadline, byte cap) within what the whole request may hold
(`max_request_image_bytes`): a fetch starts only with its cap reserved, so a request never holds
more than that, and it is refused (413) as soon as its URLs need more.

    images, known = load_images(posts, fetch_cfg, cfg.max_request_image_bytes)  # blocking: a thread
"""

from __future__ import annotations

import dataclasses
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .. import codes
from ..config import FetchCfg
from ..io.fetch import Fetched, fetch
from .errors import images_too_large
from .parse import Post


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

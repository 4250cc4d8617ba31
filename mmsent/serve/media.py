"""The media bytes (images, audio clips) of a request's posts: given ones as they are, URLs
(`image_url`, `audio_url`) fetched by mmsent.io.fetch (SSRF guard, deadline, byte cap) within what
the whole request may hold (`max_request_image_bytes`, images and audio together): a fetch starts
only with its cap reserved, so a request never holds more than that, and it is refused (413) as
soon as its URLs need more. Only the media the model reads are fetched; a URL of another is
`unused`, never fetched.

    media = load_media(posts, cfg.fetch, caps, cfg.max_request_image_bytes)  # blocking: a thread
    images, image_status = media["image"]       # caps: {"image": bytes, "audio": bytes}
"""

from __future__ import annotations

import dataclasses
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .. import codes
from ..config import FetchCfg
from ..io.fetch import Fetched, fetch
from .errors import media_too_large
from .parse import Medium, Post
from .wire import MEDIA

Media = dict[str, tuple[list[bytes | None], list[str | None]]]


def load_media(posts: list[Post], cfg: FetchCfg, caps: dict[str, int], budget: int) -> Media:
    """Per medium (wire.MEDIA): bytes per post (given, or fetched by URL) and a fetch status per
    post (None: fine). `caps`: the byte cap of one fetch, for each medium the model reads (the
    others' URLs get `unused`). `budget`: media bytes the whole request may hold (given ones
    included); more: 413."""
    out: Media = {}
    todo = []  # (medium, post, URL) of every fetch
    for m in MEDIA:
        given = [p.media.get(m, Medium()) for p in posts]
        out[m] = [g.data for g in given], [None] * len(posts)
        for i, g in enumerate(given):
            if g.url is not None and m in caps:
                todo.append((m, i, g.url))
            elif g.url is not None:
                out[m][1][i] = codes.UNUSED  # the model does not read this medium: not fetched
    left = budget - sum(len(b) for data, _ in out.values() for b in data if b is not None)
    if left < 0:
        raise media_too_large(budget)
    if todo:
        got = fetch_within([(url, caps[m]) for m, _, url in todo], cfg, left)
        if got is None:
            raise media_too_large(budget)
        for (m, i, _), g in zip(todo, got, strict=True):
            ok = g.status == codes.OK
            out[m][0][i], out[m][1][i] = (
                (g.data, None) if ok else (None, codes.fetch_code(g.status, m))
            )
    return out


def fetch_within(jobs: list[tuple[str, int]], cfg: FetchCfg, budget: int) -> list[Fetched] | None:
    """`fetch` every (URL, cap), at most `cfg.concurrency` at once, with at most `budget` bytes in
    flight: a fetch starts with its cap reserved (its own, or what is left of `budget` once nothing
    else runs). None as soon as the URLs need more than `budget`; fetches still running then end
    on their own (each within the fetch deadline), unread."""
    out: list[Fetched | None] = [None] * len(jobs)
    queue, running, free = deque((i, *job) for i, job in enumerate(jobs)), {}, budget
    pool = ThreadPoolExecutor(max(1, min(cfg.concurrency, len(jobs))), thread_name_prefix="fetch")
    try:
        while queue or running:
            # the next fetch starts once its cap is free, or alone with what is left
            while queue and len(running) < cfg.concurrency and (free >= queue[0][2] or not running):
                if free <= 0:
                    return None
                i, url, full = queue.popleft()
                cap = min(full, free)
                future = pool.submit(fetch, url, dataclasses.replace(cfg, max_bytes=cap))
                running[future], free = (i, cap, full), free - cap
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i, cap, full = running.pop(future)
                got = out[i] = future.result()  # fetch never raises: its failures are statuses
                if got.status == codes.IMAGE_BYTES_TOO_LARGE and cap < full:
                    return None  # over what the request had left, not over the per-item cap
                free += cap - len(got.data or b"")
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)

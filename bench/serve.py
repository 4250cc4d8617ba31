"""Serving speed on this machine, all in one run: requests/s and p50/p99 latency of single-post
requests over HTTP at concurrency 1, 8 and 32, with batching on and off, and the bare model's
posts/s (Predictor: the same preprocessing + model, in batches, no HTTP) on the same posts;
text-only and text+image (base64 JSON bodies).

    .venv/bin/python bench/serve.py [--model DIR] [--seconds 8] [--concurrency 1,8,32]
    .venv/bin/python bench/serve.py --runtime onnx      # the CPU preset's runtime (int8)

Posts are real: tweets (VADER ground truth) and photos shipped in installed packages (up to
1024 px). Serve runs on a local Ray on 127.0.0.1; the load generator (aiohttp, closed loop: each
client sends its next request when the last is answered) shares the machine with it. The bare
model and the model replica get the same torch threads (--threads, default: cores - 1), so the
ratio shows what serving costs the model stage; the proxy, the ingress and the client use the
rest. The bare model is measured before and after the served runs (the mean is the reference).
Ray runs its workers at niceness 15 (RAY_worker_niceness); this script lowers itself to the same,
so that on a shared machine the bare model, the client and the replicas compete on equal terms.

Two ingress paths, each on its own local Ray (a child process: Serve reads these settings at
import): `proxy`, Serve's default (client -> Python proxy actor -> ingress replica, which pulls the
body from the proxy by actor calls), and `direct`, the data path of Serve's high-throughput mode
(RAY_SERVE_ENABLE_DIRECT_INGRESS=1: the ingress replica serves HTTP on its own port, which HAProxy
mode routes to and the client here calls; RAY_SERVE_USE_GRPC_BY_DEFAULT=1: handle calls to the
model replica go over gRPC instead of Ray actor calls).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from urllib.request import urlopen

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_posts(n: int) -> dict[str, list[dict]]:
    from mmsent.sample_data import real_photos
    from mmsent.train.data import read_vader

    vader = read_vader()
    texts = [t for t, s in zip(vader.texts, vader.sources, strict=True) if s == "tweets"][:n]
    photos = [b for _, b in real_photos(max_side=1024)]
    return {
        "text-only": [{"text": t} for t in texts],
        "text+image": [{"text": t, "image": photos[i % len(photos)]} for i, t in enumerate(texts)],
    }


def bare_rates(args, posts: dict, sizes: tuple[int, ...], seconds: float) -> dict:
    """(kind, batch size) -> posts/s of Predictor.predict (preprocessing + model), no HTTP."""
    from mmsent.predictor import Predictor

    pred = Predictor(args.model, runtime=args.runtime, precision=args.precision)
    rates = {}  # torch threads: set by main()
    for kind, items in posts.items():
        pred.predict(items[: max(sizes)])  # warm-up
        for size in sizes:
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / len(sizes):
                done += len(pred.predict(items[done % len(items) :][:size]))
            rates[kind, size] = done / (time.perf_counter() - start)
    return rates


async def load(url: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when answered."""
    import aiohttp

    lat, errors, headers = [], 0, {"content-type": "application/json"}

    async def send(session, i) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
            await r.read()
            errors += r.status != 200
        lat.append(time.perf_counter() - t0)

    async def client(session, k, stop):
        i = k
        while time.perf_counter() < stop:
            await send(session, i)
            i += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(300)) as s:
        await asyncio.gather(*(send(s, k) for k in range(2 * concurrency)))  # warm-up
        lat.clear()
        errors, start = 0, time.perf_counter()
        await asyncio.gather(*(client(s, k, start + seconds) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return {
        "rps": len(lat) / elapsed,
        "p50": np.percentile(ms, 50),
        "p99": np.percentile(ms, 99),
        "errors": errors,
    }


def serve_rates(args, posts: dict, ingress: str) -> dict:
    """(batching, kind, concurrency) -> load figures, on a fresh local Ray in a child process."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as child:
        return child.submit(_serve_rates, args, posts, ingress).result()


def _serve_rates(args, posts: dict, ingress: str) -> dict:
    first_port = _free_port() if ingress == "direct" else None
    if first_port:  # before Ray and Serve are imported: they read it at import
        os.environ.update(
            RAY_SERVE_ENABLE_DIRECT_INGRESS="1",
            RAY_SERVE_USE_GRPC_BY_DEFAULT="1",
            RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=str(first_port),
            RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=str(first_port + 100),
        )
    import ray
    from ray import serve

    from mmsent.config import ServeCfg
    from mmsent.serve.app import compose

    ray.init(num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False)
    proxy_port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": proxy_port})
    bodies = {kind: [_body(p) for p in items] for kind, items in posts.items()}
    results = {}
    for batching, user_config in (
        ("on", {"max_batch_size": args.batch_size, "batch_wait_timeout_s": args.wait_ms / 1000}),
        ("off", {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}),
    ):
        # max_ongoing_requests: the deployment's default (64), above the highest concurrency, so
        # every request waits in the replica's batch queue, none in the router's retry backoff
        model_options = {
            "user_config": user_config,
            "ray_actor_options": {"num_cpus": args.threads},
        }
        cfg = ServeCfg(model_dir=args.model, runtime=args.runtime, precision=args.precision)
        app = compose(cfg, model_options)
        serve.run(app, name="bench", route_prefix="/")
        port = _replica_port(first_port, user_config) if first_port else proxy_port
        replica = _card(port)["batching"]["replica"]
        print(
            f"ingress {ingress} (port {port}), batching {batching}: model replica on "
            f"{replica['device']}, {replica['runtime']} {replica['precision']}, torch threads "
            f"{replica['torch_threads']}",
            flush=True,
        )
        for kind in posts:
            for c in args.concurrency:
                results[batching, kind, c] = asyncio.run(
                    load(f"http://127.0.0.1:{port}/v1/sentiment", bodies[kind], c, args.seconds)
                )
    serve.shutdown()
    ray.shutdown()
    return results


def _card(port: int) -> dict:
    return json.load(urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=10))


def _replica_port(first: int, user_config: dict) -> int:
    """The direct-ingress port of the ingress replica that serves this user_config (Serve hands
    out ports from `first` on; a replaced replica may still hold one while it drains)."""
    for port in range(first, first + 100):
        try:
            if _card(port)["batching"]["max_batch_size"] == user_config["max_batch_size"]:
                return port
        except OSError:
            continue
    raise RuntimeError(f"no ingress replica answers on ports {first}-{first + 99}")


def _body(post: dict) -> bytes:
    image = post.get("image")
    extra = {"image_base64": base64.b64encode(image).decode()} if image else {}
    return json.dumps({"text": post["text"], **extra}).encode()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--batch-size", type=int, default=8, help="max_batch_size, batching on")
    ap.add_argument("--wait-ms", type=float, default=10.0, help="batch wait, batching on")
    ap.add_argument("--posts", type=int, default=256)
    ap.add_argument("--ingress", default="proxy,direct", help="ingress paths: proxy, direct")
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--precision", default="auto", help="auto: int8 for onnx on a CPU")
    ap.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="torch threads of the bare model and of the model replica",
    )
    args = ap.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    ingresses = args.ingress.split(",")
    import torch

    torch.set_num_threads(args.threads)
    os.nice(max(0, 15 - os.nice(0)))  # Ray's worker niceness, see the docstring
    posts, sizes = load_posts(args.posts), (1, args.batch_size)
    before = bare_rates(args, posts, sizes, args.seconds)
    served = {ingress: serve_rates(args, posts, ingress) for ingress in ingresses}
    after = bare_rates(args, posts, sizes, args.seconds)
    bare = {k: (before[k] + after[k]) / 2 for k in before}
    print(
        f"cores: {os.cpu_count()}, torch threads (bare and replica): {args.threads}, posts: "
        f"{args.posts}, {args.seconds:g} s per figure, batching on = max_batch_size "
        f"{args.batch_size}, wait {args.wait_ms:g} ms"
    )
    print(f"{'ingress':7s} {'posts':11s} {'batching':8s} {'conc':>4s} {'req/s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s}")  # fmt: skip
    for ingress, figures in served.items():
        for (batching, kind, c), r in figures.items():
            print(f"{ingress:7s} {kind:11s} {batching:8s} {c:4d} {r['rps']:7.1f} {r['p50']:7.0f} {r['p99']:7.0f} {r['errors']:6d}")  # fmt: skip
    top, bs = max(args.concurrency), args.batch_size
    for kind in posts:
        print(
            f"{kind:11s} bare model: {bare[kind, 1]:.1f} posts/s one by one, {bare[kind, bs]:.1f} in "
            f"batches of {bs} (mean of before {before[kind, bs]:.1f} and after {after[kind, bs]:.1f})"
        )
        for ingress, figures in served.items():
            on, off = figures["on", kind, top]["rps"], figures["off", kind, top]["rps"]
            print(
                f"{kind:11s} {ingress} ingress at c={top}: batched/bare(batches) {on / bare[kind, bs]:.2f}x, "
                f"unbatched/bare(one by one) {off / bare[kind, 1]:.2f}x, batched/unbatched {on / off:.2f}x"
            )


if __name__ == "__main__":
    main()

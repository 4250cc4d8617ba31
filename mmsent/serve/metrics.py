"""Metrics of the API, exported through Ray's metrics agent in Prometheus format (with Ray's `ray_`
prefix; Serve adds the deployment, replica and application tags):

    ray_mmsent_requests_total{route, status}         requests answered, by HTTP status
    ray_mmsent_request_latency_ms{route}             latency histogram, from first byte in to response
    ray_mmsent_image_fetch_errors_total{code}        image and audio URLs not fetched, by error code
    ray_mmsent_posts_total{modalities}               posts scored, by the modalities they used
    ray_mmsent_batch_size                            posts per forward pass of the model deployment
    ray_mmsent_batch_latency_ms                      time of one forward pass

Created inside replicas only (Ray metrics need a running Ray worker).
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

LATENCY_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
ROUTES = ("/v1/sentiment", "/v1/model", "/healthz", "/docs", "/openapi.json")


class IngressMetrics:
    def __init__(self):
        self.requests = Counter(
            "mmsent_requests",
            description="HTTP requests answered, by status code.",
            tag_keys=("route", "status"),
        )
        self.latency = Histogram(
            "mmsent_request_latency_ms",
            description="Request latency in milliseconds.",
            boundaries=LATENCY_MS,
            tag_keys=("route",),
        )
        self.fetch_errors = Counter(
            "mmsent_image_fetch_errors",
            description="Image and audio URLs that could not be fetched (audio: audio_* codes).",
            tag_keys=("code",),
        )
        self.posts = Counter(
            "mmsent_posts",
            description="Posts scored, by the modalities used.",
            tag_keys=("modalities",),
        )

    def observe(self, path: str, status: int, latency_ms: float) -> None:
        route = path if path in ROUTES else "other"  # raw paths would make unbounded label sets
        self.requests.inc(tags={"route": route, "status": str(status)})
        self.latency.observe(latency_ms, tags={"route": route})


class ModelMetrics:
    def __init__(self):
        self.batch_size = Histogram(
            "mmsent_batch_size", description="Posts per forward pass.", boundaries=BATCH_SIZES
        )
        self.batch_latency = Histogram(
            "mmsent_batch_latency_ms",
            description="Forward pass time in milliseconds.",
            boundaries=LATENCY_MS,
        )

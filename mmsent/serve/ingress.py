"""`SentimentAPI`: the ingress deployment (CPU). Its constructor checks the bearer token (a blank
one fails the start), builds the replica's `Scorer` (mmsent.serve.scoring: the one Preprocessor,
media fetching, the handle of `SentimentModel`) and metrics; `__serve_build_asgi_app__` then
builds the FastAPI app (mmsent.serve.routes) over them. Options here are defaults that a Serve
config's `deployments:` entry overrides (mmsent/presets/serve/default.yaml).

    SentimentAPI -> routes.build_api -> Scorer -> DeploymentHandle -> SentimentModel

Why late-bound (`@serve.ingress()` + `__serve_build_asgi_app__`, Ray Serve 2.60) rather than
`@serve.ingress(app)` with a module-level app: the app depends on the replica's config (the body
cap, `max_posts` in the OpenAPI document, the token), which a module-level app, pickled when the
class is decorated, cannot see.
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from ..config import ServeCfg
from .auth import auth_token, require_token
from .loopback import keep_replica_grpc_on_loopback
from .metrics import IngressMetrics
from .model import BACKPRESSURE
from .routes import build_api
from .scoring import Scorer


@serve.deployment(
    max_ongoing_requests=64,
    max_queued_requests=128,
    backpressure_config=BACKPRESSURE,
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress()  # the FastAPI app is built per replica by __serve_build_asgi_app__
class SentimentAPI:
    def __init__(self, model: DeploymentHandle, cfg: ServeCfg):
        self.token = auth_token(cfg.auth_token_env)  # first: a bad token fails the start at once
        keep_replica_grpc_on_loopback()
        self.cfg, self.metrics = cfg, IngressMetrics()
        self.scorer = Scorer(model, cfg, self.metrics)

    def __serve_build_asgi_app__(self):
        return build_api(self.cfg, self.scorer, require_token(self.token), self.metrics)

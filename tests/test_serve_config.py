"""mmsent/presets/serve/default.yaml and `mmsent serve`: the config validates as `serve deploy` and the app
read it; `mmsent serve --config` deploys it (the `serve run CONFIG` path, as `serve deploy` does);
a redeploy that changes only the model's user_config reconfigures the running replica in place;
past max_queued_requests the API answers 503 with Retry-After at once."""

from __future__ import annotations

import inspect
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml
from serve_helpers import free_port, tiny_checkpoint

from mmsent import codes
from mmsent.config import ConfigError
from mmsent.serve.app import AppArgs, build_app, load_serve_config, main


def test_default_config_is_valid_for_serve_and_for_the_app():
    from ray.serve.schema import ServeDeploySchema

    config = load_serve_config("default")  # raises on any problem
    schema = ServeDeploySchema.model_validate(config)
    [app] = schema.applications
    assert (
        app.import_path == "mmsent.serve.app:build_app"
        and config["http_options"]["host"] == "127.0.0.1"
    )
    assert AppArgs.model_validate(app.args).root.fetch.block_private_networks
    # Serve validates `args` with the builder's annotation only if it is a class, not a string
    assert inspect.signature(build_app).parameters["args"].annotation is AppArgs


@pytest.mark.parametrize(
    "change, message",
    [({"args": {"max_postz": 3}}, "max_postz"),
     ({"args": {"fetch": {"schemes": ["http", "file"]}}}, "file"),
     ({"args": {"fetch": {"allow_networks": ["10.0.0.0/33"]}}}, "10.0.0.0/33"),
     ({"args": {"max_request_image_bytes": 1024}}, "max_request_image_bytes must be >="),
     ({"args": {"decode_slots": 0}}, "decode_slots"),
     ({"deployments": [{"name": "SentimentModel", "user_config": {"max_batch": 8}}]}, "max_batch"),
     ({"deployments": [{"name": "Model"}]}, "unknown deployment"),
     ({"deployments": [{"name": "SentimentModel", "num_replicas": -1}]}, "num_replicas")],
)  # fmt: skip
def test_bad_configs_are_refused_with_a_clear_message(tmp_path, capsys, change, message):
    config = load_serve_config("default")
    config["applications"][0].update(change)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--config", str(path), "--dry-run"]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(ConfigError):
        load_serve_config(str(path))


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["--dry-run", "--port", "8123", "--model", "/models/x"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["http_options"]["port"] == 8123
    assert config["applications"][0]["args"]["model_dir"] == "/models/x"


def _config(tmp, port: int, model_dir: str, user_config: dict) -> str:
    """default.yaml with a free port, the tiny model, no auth, and a small model deployment."""
    config = load_serve_config("default", {"port": port, "model_dir": model_dir})
    app = config["applications"][0]
    app["args"]["auth_token_env"] = None
    api, model = app["deployments"]
    del model["autoscaling_config"]
    model.update(
        num_replicas=1,
        max_ongoing_requests=2,
        max_queued_requests=2,
        user_config=user_config,
        ray_actor_options={"num_cpus": 1, "num_gpus": 0.25},
    )
    path = tmp / f"serve-{len(list(tmp.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def deployed(ray_local, tmp_path_factory):
    from ray import serve

    tmp = tmp_path_factory.mktemp("serve-config")
    model_dir = tiny_checkpoint(tmp_path_factory.getbasetemp() / "tiny-model")
    port = free_port()
    path = _config(tmp, port, model_dir, {"max_batch_size": 1, "batch_wait_timeout_s": 0.0})
    assert main(["--config", path, "--non-blocking"]) == 0
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    while not _healthy(url) and time.monotonic() < deadline:
        time.sleep(1)
    # health checks began before the model was up (some were cancelled by their client's
    # timeout): /healthz must recover, not stay stuck on a ping that went with them
    assert _healthy(url), "the app did not become healthy"
    yield url, tmp, port, model_dir
    serve.shutdown()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:  # not up yet, or the model not loaded yet
        return False


def _burst(url: str, n: int) -> list[requests.Response]:
    with ThreadPoolExecutor(n) as pool:
        return list(
            pool.map(
                lambda i: requests.post(
                    f"{url}/v1/sentiment", json={"text": f"post {i}"}, timeout=60
                ),
                range(n),
            )
        )


def _batching(url: str) -> dict:
    return requests.get(f"{url}/v1/model", timeout=30).json()["batching"]


def test_user_config_change_applies_in_place(deployed):
    url, tmp, port, model_dir = deployed
    assert [r.status_code for r in _burst(url, 2)] == [200, 200]
    before = _batching(url)
    assert before["max_batch_size"] == 1 and before["replica"]["largest_batch"] == 1
    path = _config(tmp, port, model_dir, {"max_batch_size": 8, "batch_wait_timeout_s": 1.0})
    assert main(["--config", path, "--non-blocking"]) == 0
    deadline = time.monotonic() + 60
    while _batching(url)["max_batch_size"] != 8 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = _batching(url)
    assert after["batch_wait_timeout_s"] == 1.0
    assert after["replica"]["pid"] == before["replica"]["pid"]  # the same replica, reconfigured
    assert [r.status_code for r in _burst(url, 2)] == [200, 200]
    assert _batching(url)["replica"]["largest_batch"] == 2  # both waited for the same batch


def test_past_max_queued_requests_the_api_answers_503_with_retry_after(deployed):
    url = deployed[0]  # model: 2 ongoing + 2 queued; each batch waits 1 s for more posts
    responses = _burst(url, 12)
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == codes.OVERLOADED


def test_a_health_check_whose_client_gives_up_does_not_wedge_healthz(deployed):
    """The model is busy (2 ongoing requests, each batch waits 1 s), so a health check's ping
    waits for a slot, and that check's client gives up. The ping is shared by every check
    (single flight): /healthz answers 200 again once the model has a slot, instead of waiting
    forever on a ping that Serve cancelled with its first client."""
    url = deployed[0]
    time.sleep(1.5)  # past health_cache_s: the next check pings
    with ThreadPoolExecutor(2) as pool:
        post = {"json": {"text": "busy"}, "timeout": 60}
        busy = [pool.submit(requests.post, f"{url}/v1/sentiment", **post) for _ in range(2)]
        time.sleep(0.3)
        with pytest.raises(requests.Timeout):
            requests.get(f"{url}/healthz", timeout=0.3)
        assert [f.result().status_code for f in busy] == [200, 200]
    time.sleep(1.5)
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200

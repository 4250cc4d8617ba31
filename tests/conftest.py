"""Shared fixtures: real parts on 127.0.0.1 only (a moto S3 server, a local Ray instance)."""

from __future__ import annotations

import os

import pytest

# Before Ray starts: every Ray listener on 127.0.0.1, no cloud metadata lookups, no hub access.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; AWS_* settings point boto3, pyarrow and Ray Data at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray instance for the session (loopback only), with a pretend GPU for scheduling
    tests. It starts after the S3 server so that its workers inherit the AWS_* settings."""
    import ray

    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def encoders(tmp_path_factory):
    """A tiny random BERT and CLIP vision tower saved as local transformers folders."""
    from mmsent.testing import tiny_text_encoder, tiny_vision_encoder

    root = tmp_path_factory.mktemp("enc")
    return tiny_text_encoder(root / "bert"), tiny_vision_encoder(root / "clip")


@pytest.fixture(scope="session")
def photos():
    """Real photos (<= 96 px) as bytes; modules with photos of their own shadow this one."""
    from mmsent.sample_data import real_photos

    return [b for _, b in real_photos(max_side=96)]

"""deploy/: every manifest valid against KubeRay's CRDs / Kubernetes' schemas (strictly: broken
copies are refused), serveConfigV2 generated from mmsent/presets/serve/ and accepted by the real app
builder, a RayJob entrypoint that runs, one Ray version everywhere, the right base image.
Fast: no Ray instance, no cluster, no Docker (the image itself is checked when it is built)."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
IMAGE_APP_DIR = "/home/ray/mmsent"  # WORKDIR of deploy/Dockerfile: the repo's root in the image
PYPROJECT = (REPO / "pyproject.toml").read_text()  # (tomllib is 3.11+; the package says 3.10)
RAY_PIN = re.search(r'"ray\[[^\]]*\]==([^"]+)"', PYPROJECT)[1]
VERSION = re.search(r'^version = "([^"]+)"', PYPROJECT, re.M)[1]
TAG = re.compile(
    r".+/mmsent:(?P<version>[^-]+)-ray(?P<ray>[\d.]+)-(?P<variant>cpu|gpu)(@sha256:\w+)?"
)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate, render = _load("validate"), _load("render")


def manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


SECRETS = {
    d["metadata"]["name"]: d
    for d in yaml.safe_load_all((DEPLOY / "secrets.example.yaml").read_text())
}


def groups(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of the head and every worker group."""
    out = [("head", cluster_spec["headGroupSpec"]["template"]["spec"])]
    return out + [(g["groupName"], g["template"]["spec"]) for g in cluster_spec["workerGroupSpecs"]]


def gpus(pod: dict) -> int:
    return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in pod["containers"])


JOB, SERVICE = manifest("ray-job.bulk-score.yaml"), manifest("ray-service.sentiment.yaml")
CLUSTERS = {"job": JOB["spec"]["rayClusterSpec"], "service": SERVICE["spec"]["rayClusterConfig"]}
ALL_PODS = [(f"{kind}/{group}", pod) for kind, c in CLUSTERS.items() for group, pod in groups(c)]
ALL_PODS += [("job/submitter", JOB["spec"]["submitterPodTemplate"]["spec"])]


def test_kuberay_crds_are_found():
    assert {"RayJob", "RayService", "RayCluster"} <= {k for _, k in validate.crd_validators()}


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_crds_are_the_pinned_kuberay_release_inside_the_repo():
    """deploy/crds/ holds KubeRay's files unchanged (their git blobs at the tag noted in its
    README), of the KubeRay version that deploy/README.md tells users to install."""
    crds = validate.crd_dir()
    assert crds.resolve().is_relative_to(REPO) and crds == DEPLOY / "crds"
    notes = (crds / "README.md").read_text()
    pinned = dict(re.findall(r"^\| `(ray\.io_\w+\.yaml)` \| `([0-9a-f]{40})` \|$", notes, re.M))
    assert pinned and set(pinned) == {f.name for f in crds.glob("*.yaml")}
    for name, blob in pinned.items():
        assert git_blob(crds / name) == blob, f"{name} differs from KubeRay's file"
    [tag] = re.findall(r"^- tag: `v([\d.]+)`", notes, re.M)
    [needed] = re.findall(r"KubeRay operator ([\d.]+)", (DEPLOY / "README.md").read_text())
    assert tag == needed


@pytest.mark.parametrize("path", validate.MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path):
    assert validate.validate_file(path) == []


def _rename(d, old, new):
    d[new] = d.pop(old)


# (manifest, mutation, text the error must contain): misspelled fields and wrong types
BROKEN = [
    ("ray-job.bulk-score.yaml", lambda d: _rename(d["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"), "shutdownAfterJobFinish"),
    ("ray-job.bulk-score.yaml", lambda d: _rename(d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0], "minReplicas", "minReplica"), "minReplica"),
    ("ray-job.bulk-score.yaml", lambda d: d["spec"].update(backoffLimit="1"), "is not of type 'integer'"),
    ("ray-job.bulk-score.yaml", lambda d: _rename(d["metadata"], "labels", "label"), "metadata"),
    ("ray-service.sentiment.yaml", lambda d: d["spec"]["upgradeStrategy"].update(type=5), "is not of type 'string'"),
    ("ray-service.sentiment.yaml", lambda d: _rename(d["spec"]["rayClusterConfig"]["workerGroupSpecs"][-1]["template"]["spec"]["containers"][0], "resources", "resource"), "resource"),
    ("ray-service.sentiment.yaml", lambda d: d["spec"].update(serveConfigV2={"applications": []}), "is not of type 'string'"),
    ("secrets.example.yaml", lambda d: _rename(d, "stringData", "stringdata"), "stringdata"),
    ("secrets.example.yaml", lambda d: d["stringData"].update(AWS_REGION=1), "is not of type 'string'"),
]  # fmt: skip


@pytest.mark.parametrize("name,mutate,expected", BROKEN)
def test_broken_copy_is_rejected(name, mutate, expected):
    doc = manifest(name) if name != "secrets.example.yaml" else copy.deepcopy(SECRETS["mmsent-s3"])
    assert validate.validate_doc(doc) == []
    mutate(doc)
    errors = validate.validate_doc(doc)
    assert errors and any(expected in e for e in errors), errors


def test_plain_crd_schema_would_let_a_misspelling_through():
    """Why validate.close() exists: the CRD schema alone, as JSON Schema, allows unknown fields."""
    import jsonschema

    crd = yaml.load((validate.crd_dir() / "ray.io_rayjobs.yaml").read_text(), validate.SafeLoader)
    doc = manifest("ray-job.bulk-score.yaml")
    _rename(doc["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert jsonschema.Draft7Validator(schema).is_valid(doc)
    assert not jsonschema.Draft7Validator(validate.close(schema)).is_valid(doc)


def test_ray_versions_agree():
    import ray

    lock = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().split())
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert lock["ray"] == ray.__version__ == RAY_PIN
    assert re.search(r"^ARG RAY_VERSION=(.+)$", dockerfile, re.M)[1] == RAY_PIN
    assert all(cluster["rayVersion"] == RAY_PIN for cluster in CLUSTERS.values())
    for where, pod in ALL_PODS:
        for c in pod["containers"]:
            tag = TAG.fullmatch(c["image"])
            assert tag, f"{where}: image {c['image']} is not REGISTRY/mmsent:V-rayR-VARIANT"
            assert tag["ray"] == RAY_PIN and tag["version"] == VERSION, where
            assert tag["variant"] == ("gpu" if gpus(pod) else "cpu"), where


def test_pods_run_as_the_images_non_root_user():
    for where, pod in ALL_PODS:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000, where  # `ray` in the image
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where


def test_dockerfile_base_image_matches_the_pins():
    text = (DEPLOY / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    [base, *stages] = re.findall(r"^FROM (\S+)", text, re.M)
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], base)
    assert image == f"rayproject/ray:{RAY_PIN}-py{sys.version_info[0]}{sys.version_info[1]}-cpu"
    assert stages and set(stages) == {"base"}  # every stage, the final one too, on that image
    assert re.findall(r"^USER (\S+)$", text, re.M)[-1] == "1000:100"  # non-root, numeric


def dockerfile_stages() -> dict[str, str]:
    """Stage name ("" for the final, unnamed one) -> its instructions (continuations joined)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    return {(re.match(r"\S+(?: AS (\S+))?", st)[1] or ""): st for st in stages}


def test_dockerfile_installs_the_wheel_not_the_source_tree():
    stages = dockerfile_stages()
    wheel, final = stages["wheel"], stages[""]
    assert re.search(r"pip wheel --no-deps --no-build-isolation .*\.$", wheel, re.M)
    assert "setuptools==" in wheel  # the build backend at the lock's pin, not "latest"
    assert re.search(
        r"--mount=type=bind,from=wheel\S* +pip install --no-deps \S+/mmsent-\*\.whl", final
    )
    assert not re.search(r"pip install .*(-e|--editable)\b", final)
    copied = [
        src
        for c in re.findall(r"^COPY (?!--from)(.*)$", final, re.M)
        for src in c.split()[:-1]
        if not src.startswith("--")
    ]
    # no source tree in the image: a folder `mmsent/` in WORKDIR would shadow the wheel
    assert not any(src.rstrip("/") in (".", "mmsent") for src in copied), copied


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent folder decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for p in patterns:
        glob = p.removeprefix("!").strip("/")
        rx = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(rx, x) for x in prefixes):
            excluded = not p.startswith("!")
    return excluded


def test_dockerignore_lets_in_exactly_what_the_copies_need():
    from mmsent.models.checkpoint import DEFAULT_MODEL_DIR, read_meta

    read_meta()  # the default model that the wheel (and so the image) carries is in the repo
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    sources = [
        src
        for st in dockerfile_stages().values()
        for c in re.findall(r"^COPY (?!--from)(.*)$", st, re.M)
        for src in c.split()[:-1]
        if not src.startswith("--")
    ]
    assert {"pyproject.toml", "mmsent/", "ray_jobs/", "deploy/sizing.py"} <= set(sources)
    needed = [str(f.relative_to(REPO)) for s in sources for f in [REPO / s] if f.is_file()]
    needed += [
        str(f.relative_to(REPO))
        for s in sources
        if (REPO / s).is_dir()
        for f in (REPO / s).rglob("*")
        if f.is_file() and "__pycache__" not in f.parts
    ]
    assert str(DEFAULT_MODEL_DIR.relative_to(REPO) / "model.safetensors") in needed
    assert "mmsent/presets/score/local.yaml" in needed
    for path in needed:
        assert not dockerignored(path, patterns), f".dockerignore would leave {path} out"
    for path in [
        ".git/HEAD",
        ".venv/bin/python",
        "tests/test_deploy.py",
        "deploy/crds/LICENSE",
        "out/x",
        "mmsent/__pycache__/config.cpython-311.pyc",
        "mmsent.egg-info/PKG-INFO",
    ]:
        assert dockerignored(path, patterns), f".dockerignore lets {path} into the context"


def test_rayjob_lifecycle_and_worker_groups():
    spec = JOB["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] >= 0
    for kind, cluster in CLUSTERS.items():
        assert cluster["enableInTreeAutoscaling"] is True, kind
        workers = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
        assert any(gpus(g["template"]["spec"]) for g in workers.values()), kind
        assert any(not gpus(g["template"]["spec"]) for g in workers.values()), kind
        for name, g in workers.items():
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], f"{kind}/{name}"


def test_credentials_come_from_secrets_never_inline():
    for kind, cluster in CLUSTERS.items():
        for group, pod in groups(cluster):
            for c in pod["containers"]:
                for env in c.get("env", []):
                    assert "value" not in env or not re.search(
                        r"AWS|SECRET|TOKEN|PASSWORD|KEY|ENDPOINT", env["name"]
                    ), f"{kind}/{group}: {env['name']} inline"
                    if ref := env.get("valueFrom", {}).get("secretKeyRef"):
                        assert ref["key"] in SECRETS[ref["name"]]["stringData"], ref
                refs = [e["secretRef"]["name"] for e in c.get("envFrom", [])]
                assert all(r in SECRETS for r in refs), refs
                if kind == "job":  # the driver and every worker may read S3
                    assert "mmsent-s3" in refs, f"job/{group} lacks the S3 Secret"
    assert {"AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL"} <= set(SECRETS["mmsent-s3"]["stringData"])


def test_api_token_reaches_every_serving_pod():
    cfg = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])
    token_env = cfg["applications"][0]["args"]["auth_token_env"]
    for group, pod in groups(CLUSTERS["service"]):
        env = {e["name"]: e for c in pod["containers"] for e in c.get("env", [])}
        assert "secretKeyRef" in env[token_env]["valueFrom"], group


def entrypoint():
    """(script in this repo, arguments parsed by score.py's own parser) of the RayJob."""
    from mmsent.pipeline.cli import parser

    argv = shlex.split(JOB["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith(IMAGE_APP_DIR + "/"), argv
    script = REPO / argv[1].removeprefix(IMAGE_APP_DIR + "/")
    return script, parser(script.name).parse_args(argv[2:])  # SystemExit on a bad argument


def test_rayjob_entrypoint_help_runs():
    script, args = entrypoint()
    assert script == REPO / "ray_jobs" / "score.py"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--config" in done.stdout and args.input.startswith("s3://")


def test_rayjob_gpu_group_holds_the_presets_actor_pool():
    from mmsent.config import ScoreCfg, load_config, resolve_preset

    _, args = entrypoint()
    assert (
        resolve_preset(args.config, "score")
        .resolve()
        .is_relative_to(REPO / "mmsent" / "presets" / "score")
    )
    cfg = load_config(ScoreCfg, args.config, args.set, kind="score")
    assert cfg.model_num_gpus > 0, "the RayJob's preset must put the model on GPUs"
    pods = [(g, g["template"]["spec"]) for g in CLUSTERS["job"]["workerGroupSpecs"]]
    gpu_pods = [(g, pod) for g, pod in pods if gpus(pod)]
    assert cfg.model_max_actors * cfg.model_num_gpus <= sum(
        g["maxReplicas"] * gpus(pod) for g, pod in gpu_pods
    )
    for _, pod in gpu_pods:  # the actors that share a pod's GPUs also fit its CPUs
        actors = gpus(pod) / cfg.model_num_gpus
        cpus = float(pod["containers"][0]["resources"]["limits"]["cpu"])
        assert actors * cfg.model_num_cpus <= cpus


def test_rayservice_gpu_group_holds_the_model_replicas():
    cfg = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])
    pods = [(g, g["template"]["spec"]) for g in CLUSTERS["service"]["workerGroupSpecs"]]
    capacity = sum(g["maxReplicas"] * gpus(pod) for g, pod in pods if gpus(pod))
    needed = sum(
        d["autoscaling_config"]["max_replicas"] * d["ray_actor_options"]["num_gpus"]
        for app in cfg["applications"]
        for d in app["deployments"]
        if d.get("ray_actor_options", {}).get("num_gpus", 0) > 0
    )
    assert 0 < needed <= capacity


def test_serve_config_is_rendered_from_configs_serve():
    text = (DEPLOY / "ray-service.sentiment.yaml").read_text()
    assert render.render_manifest(text, render.render_config()) == text, (
        "stale serveConfigV2: run `python deploy/render.py`"
    )


def test_serve_config_builds_the_packaged_app_with_valid_args():
    cfg = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])
    assert cfg["applications"], "no application in serveConfigV2"
    for app in cfg["applications"]:
        assert app["import_path"].startswith("mmsent."), app["import_path"]
    assert render.serve_config_errors(cfg) == []
    assert cfg["http_options"]["host"] == "0.0.0.0"  # reachable from the pod network
    ports = {
        p["name"]: p["containerPort"]
        for _, pod in groups(CLUSTERS["service"])
        for c in pod["containers"]
        for p in c.get("ports", [])
    }
    assert cfg["http_options"].get("port", 8000) == ports["serve"]
    deployments = [d for app in cfg["applications"] for d in app.get("deployments", [])]
    gpu = [d for d in deployments if d.get("ray_actor_options", {}).get("num_gpus", 0) > 0]
    assert gpu and all("autoscaling_config" in d for d in gpu)


def test_serve_config_check_catches_what_serve_would_refuse():
    good = yaml.safe_load(SERVICE["spec"]["serveConfigV2"])
    app = good["applications"][0]

    def broken(change) -> list[str]:
        cfg = copy.deepcopy(good)
        change(cfg["applications"][0])
        return render.serve_config_errors(cfg)

    assert any(
        "num_replica" in e for e in broken(lambda a: a["deployments"][0].update(num_replica=2))
    )
    assert any("NoSuch" in e for e in broken(lambda a: a["deployments"][0].update(name="NoSuch")))
    assert any("args rejected" in e for e in broken(lambda a: a["args"].update(max_posts="many")))
    assert any("args rejected" in e for e in broken(lambda a: a["args"].update(max_post=32)))
    with pytest.raises(render.RenderError, match="NoSuch"):
        overlay = {"applications": [{"name": app["name"], "deployments": [{"name": "NoSuch"}]}]}
        render.merge(good, overlay)


def test_serve_config_passes_the_apps_own_config_check(tmp_path):
    """mmsent.serve.app.load_serve_config also checks the model's user_config (ServeBatchCfg)."""
    from mmsent.serve.app import load_serve_config

    path = tmp_path / "serve.yaml"
    path.write_text(SERVICE["spec"]["serveConfigV2"])
    assert load_serve_config(str(path))["http_options"]["host"] == "0.0.0.0"

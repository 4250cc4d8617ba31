"""The wheel on its own: built from this checkout, installed into a fresh venv outside it, run from
a folder with no checkout around: `mmsent predict`, `mmsent score` on a small dump (a local Ray
of its own) and `mmsent serve --dry-run`. What breaks here breaks for anyone who pip-installs it.

The venv is a real install: the lock's pins as scripts/setup.sh installs them (uv, CPU torch from
/opt/wheels where there is one), from uv's cache when it holds them (seconds: uv links the files),
from the index otherwise; mmsent itself only from the wheel (--no-deps).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# what a build reads lives in the checkout; what a checkout collects (venvs, outputs) stays out
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "out", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)


def run(cmd: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def uv(*args: str) -> None:
    """A uv command from the cache alone (fast, offline), else as it would run anywhere."""
    exe = shutil.which("uv") or pytest.fail("uv not found: scripts/setup.sh installs it")
    offline = subprocess.run([exe, *args, "--offline"], capture_output=True, text=True, timeout=300)
    if offline.returncode != 0:
        run([exe, *args])


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(venv, environment, a working folder) of someone who installed the wheel and nothing else."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.resolve().is_relative_to(REPO)
    src = tmp / "src"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    uv("build", "-q", "--wheel", "--out-dir", str(tmp / "dist"), str(src))
    [wheel] = (tmp / "dist").glob("mmsent-*.whl")
    venv = tmp / "venv"
    uv("venv", "-q", "-p", sys.executable, str(venv))
    links = ["--find-links", "/opt/wheels"] if Path("/opt/wheels").is_dir() else []
    lock = str(REPO / "requirements.lock")
    uv("pip", "install", "-q", "-p", str(venv), *links, "-r", lock)
    uv("pip", "install", "-q", "-p", str(venv), "--no-deps", str(wheel))
    shutil.rmtree(src)  # nothing of the checkout is left beside the install
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    home = tmp / "home"
    home.mkdir()
    return venv, env, home


def mmsent(user, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    venv, env, home = user
    return run([str(venv / "bin" / "mmsent"), *args], timeout=timeout, env=env, cwd=home)


def photo(path: Path, colour: tuple[int, int, int]) -> str:
    from PIL import Image

    Image.new("RGB", (96, 64), colour).save(path)
    return path.name


def test_mmsent_imported_is_the_wheels(user):
    venv, env, home = user
    code = "import json, sys, mmsent; print(json.dumps([mmsent.__file__, sys.path]))"
    out = run([str(venv / "bin" / "python"), "-c", code], env=env, cwd=home).stdout
    file, path = json.loads(out)
    assert Path(file).is_relative_to(venv) and "site-packages" in Path(file).parts, file
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(REPO)], path


def test_predict_prints_a_label(user):
    image = photo(user[2] / "beach.jpg", (40, 120, 220))
    out = mmsent(user, "predict", "--text", "What a wonderful day, I love it!", "--image", image)
    result = json.loads(out.stdout)
    assert result["label"] in ("negative", "neutral", "positive")
    assert result["modalities_used"] == ["text", "image"] and result["error"] is None
    assert result["model"]["name"] == "mmsent-default"  # the default model, package data


def test_score_writes_one_row_per_post(user):
    dump = user[2] / "dump"
    dump.mkdir()
    posts = [
        {
            "id": "a",
            "text": "Best concert ever, so happy",
            "image_url": photo(dump / "a.png", (250, 200, 0)),
        },
        {"id": "b", "text": "This is the worst service I have had."},
        {"id": "c", "image_url": photo(dump / "c.jpg", (20, 20, 20))},
        {"id": "d", "text": "The meeting is at noon.", "image_url": "not-there.jpg"},
        {"id": "e", "text": ""},
    ]
    (dump / "posts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in posts))
    # the shipped preset `local` (package data), with one model actor: five posts need no second
    args = ["--set", "model_min_actors=1", "model_max_actors=1", "--show", "5"]
    mmsent(user, "score", "dump/posts.jsonl", "scores", *args, timeout=420)
    out = user[2] / "scores"
    rows = {
        r["id"]: r for f in glob.glob(str(out / "*.parquet")) for r in pq.read_table(f).to_pylist()
    }
    assert sorted(rows) == [p["id"] for p in posts]
    assert json.loads((out / "_summary.json").read_text())["rows"] == len(posts)
    assert rows["a"]["modalities"] == "text+image" and rows["a"]["error"] is None
    assert rows["b"]["label"] is not None and rows["c"]["modalities"] == "image"
    assert rows["d"]["error"] == "image_not_found" and rows["d"]["label"] is not None
    assert rows["e"]["label"] is None and rows["e"]["error"]  # a bad row stays, with its code


def test_serve_dry_run_validates_the_packaged_config(user):
    out = mmsent(user, "serve", "--dry-run", "--port", "8123")
    config = yaml.safe_load(out.stdout)
    [app] = config["applications"]
    assert app["import_path"] == "mmsent.serve.app:build_app"
    assert config["http_options"]["port"] == 8123

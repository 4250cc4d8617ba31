"""`mmsent train --config default`, the command that builds the shipped default model, run small
(a tiny random BERT, 40 posts per source, one epoch, exported to a temporary folder): the VADER
comparison and the int8 quality guard run as evaluation steps, their figures land in the card, and the same command gives
the same weights and the same card twice. Also: mmsent/train has no import cycle."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmsent import cli
from mmsent.config import to_dict
from mmsent.models.checkpoint import read_meta
from mmsent.testing import tiny_text_encoder
from mmsent.train.data import VADER_SOURCES
from mmsent.train.default_model import render_card
from mmsent.train.run import resolve

TRAIN = Path(__file__).resolve().parents[1] / "mmsent" / "train"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("default")
    bert = tiny_text_encoder(root / "bert")
    model = [f"model.text.pretrained={bert}", "model.text.max_length=32", "model.text.max_chunks=2",
             "model.image.image_size=64", "model.fusion.hidden=32"]  # fmt: skip
    return [*model, "data.limit=40", "train.epochs=1", f"out_dir={root / 'runs'}"]


def build(small: list[str], tmp: Path, name: str) -> Path:
    argv = ["train", "--config", "default", *small, f"name={name}", f"export_to={tmp / name}"]
    assert cli.main(argv) == 0
    return tmp / name


def test_default_preset_builds_a_carded_checkpoint_reproducibly(small, tmp_path):
    first, second = build(small, tmp_path, "a"), build(small, tmp_path, "b")
    card = read_meta(first)["card"]
    cfg = resolve("default", small)[0]
    assert set(card["held_out"]) == set(VADER_SOURCES)
    assert sum(r["n"] for r in card["held_out"].values()) == 24  # 20% of 40 per source
    assert card["train_cfg"] == to_dict(cfg.train) and card["trained_on"] == cfg.card["trained_on"]
    assert card["split"] == {
        "fractions": [0.7, 0.1, 0.2],
        "seed": 13,
        "stratified_by": "source and label",
    }
    assert "| tweets | 8 |" in render_card(card)
    # the run folder holds the same card (best/) and the step's figures (metrics.json)
    run = Path(cfg.out_dir) / "a"
    assert read_meta(run / "best")["card"]["held_out"] == card["held_out"]
    assert (
        json.loads((run / "metrics.json").read_text())["evals"]["vader"]["held_out"]
        == card["held_out"]
    )
    images = json.loads((run / "data" / "images.json").read_text())["train"]
    assert images.get("ok", 0) > 0  # unrelated photos on a share of the training posts
    # same seed, same data: the same weights and the same figures
    a, b = (load_file(str(d / "model.safetensors")) for d in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_meta(second)["card"]["held_out"] == card["held_out"]
    # the int8 step: the ONNX int8 export against fp32 per source, the same twice
    assert set(card["int8"]["sources"]) == set(VADER_SOURCES)
    assert read_meta(second)["card"]["int8"] == card["int8"]


def test_unknown_eval_step_is_refused_before_training(small, tmp_path, capsys):
    argv = ["train", "--config", "default", *small, "evals=[nope]", f"export_to={tmp_path}/x"]
    assert cli.main(argv) == 2
    assert "evals ['nope']" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_train_package_has_no_import_cycle():
    graph = {}
    for f in TRAIN.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):  # module-level and deferred imports
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                deps |= {n.split(".")[0] for n in names}
        graph[f.stem] = {d for d in deps if (TRAIN / f"{d}.py").exists()}

    def reach(start: str, seen: set[str]) -> set[str]:
        for d in graph[start] - seen:
            seen.add(d)
            reach(d, seen)
        return seen

    assert not [m for m in graph if m in reach(m, set())]
    assert "ray_train" not in reach("loop", set())  # the loop knows no launcher

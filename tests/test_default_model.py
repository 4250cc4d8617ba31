"""The shipped default model: it loads offline, ranks obvious cases right, and reproduces the
held-out figures in its model card (which README.md quotes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmsent.models.checkpoint import DEFAULT_MODEL_DIR, read_meta
from mmsent.predictor import Predictor
from mmsent.sample_data import photo_files


@pytest.fixture(scope="module")
def predictor():
    return Predictor(device="cpu")


def test_love_ranks_above_terrible(predictor):
    love, terrible = predictor.predict([{"text": "I love this!"}, {"text": "This is terrible."}])
    assert love["label"] == "positive" and terrible["label"] == "negative"
    assert love["scores"]["positive"] > terrible["scores"]["positive"]
    assert love["model"]["name"] == "mmsent-default"


def test_image_only_and_no_input(predictor):
    photo = photo_files()[0].read_bytes()
    image_only, nothing = predictor.predict([{"text": None, "image": photo}, {"text": "  "}])
    assert image_only["modalities_used"] == ["image"] and image_only["label"] is not None
    assert nothing["label"] is None and nothing["error"] == "empty_text"


@pytest.fixture(scope="module")
def held_out():
    from mmsent.train.default_model import splits

    return splits()[2]


@pytest.fixture(scope="module")
def fp32_probs(predictor, held_out):
    from mmsent.train.batches import predict_posts

    return predict_posts(predictor.runner.model, predictor.pre, held_out)[0]


def test_reproduces_held_out_figures(predictor, held_out, fp32_probs):
    from mmsent.train.default_model import held_out_report

    card = read_meta()["card"]
    got = held_out_report(predictor.runner.model, predictor.pre, held_out, fp32_probs)
    for source, figures in card["held_out"].items():
        assert got[source]["n"] == figures["n"]
        for who in ("model", "vader"):
            for metric in ("macro_f1", "accuracy"):
                assert got[source][who][metric] == pytest.approx(figures[who][metric], abs=2e-3), (
                    source,
                    who,
                    metric,
                )
        # the promise of the model card: at least 5 macro-F1 points over VADER on every source
        assert got[source]["model"]["macro_f1"] >= got[source]["vader"]["macro_f1"] + 0.05, source


def test_int8_quality_guard(predictor, held_out, fp32_probs):
    """The ONNX int8 runtime (the CPU default of the score and serve presets) against torch fp32
    on every held-out source: >= 99 % of labels the same, macro-F1 within 0.5 points; the card
    holds these figures."""
    from mmsent.models.runtime import load_runtime
    from mmsent.train.batches import predict_posts
    from mmsent.train.default_model import int8_report

    int8 = load_runtime(None, "onnx", "int8")  # the cached export, built here if missing
    assert int8.precision == "int8" and int8.recheck_towers is not None
    probs, _ = predict_posts(int8, predictor.pre, held_out)
    got = int8_report(
        predictor.cfg.labels, held_out, fp32_probs, probs, int8.rechecked / int8.posts
    )
    for source, r in got["sources"].items():
        assert r["label_agreement"] >= 0.99, (source, r)
        assert r["macro_f1_fp32"] - r["macro_f1_int8"] <= 0.005, (source, r)
    assert got["passed"] and 0 < got["rechecked_in_fp32"] < 0.2
    card = read_meta()["card"]["int8"]
    for source, r in card["sources"].items():
        for k, v in r.items():
            assert got["sources"][source][k] == pytest.approx(v, abs=2e-3), (source, k)


def test_card_says_the_default_preset_built_it():
    """The shipped checkpoint is the export of `mmsent train --config default`: its card holds
    that preset's schedule, split and text, a history of every epoch, and the VADER step's table."""
    from mmsent.config import ModelCfg, from_dict, to_dict
    from mmsent.train.data import VADER_SOURCES
    from mmsent.train.run import resolve

    cfg, card = resolve("default", [])[0], read_meta()["card"]
    assert card["train_cfg"] == to_dict(cfg.train)
    split = {"fractions": cfg.data.split, "seed": cfg.data.split_seed}
    assert card["split"] == {**split, "stratified_by": "source and label"}
    assert {k: card[k] for k in cfg.card} == cfg.card
    assert [h["epoch"] for h in card["history"]] == list(range(1, cfg.train.epochs + 1))
    assert list(card["held_out"]) == list(VADER_SOURCES)
    # mmsent/presets/models/default.yaml (the shipped config predates the tabular and audio keys)
    assert from_dict(ModelCfg, read_meta()["model"]) == cfg.model


def test_readme_quotes_the_model_card():
    from pathlib import Path

    from mmsent.train.default_model import render_card

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert render_card(read_meta()["card"]) in readme


def test_cli_predict_prints_json():
    photo = str(photo_files()[0])
    predict = [sys.executable, "-m", "mmsent.cli", "predict"]
    opts = {"capture_output": True, "text": True, "timeout": 300}
    out = subprocess.run(
        [*predict, "--text", "What a lovely day", "--image", photo], check=True, **opts
    )
    result = json.loads(out.stdout)
    assert result["label"] == "positive"
    assert result["modalities_used"] == ["text", "image"]
    assert set(result["fusion_weights"]) == {"text", "image"}
    assert np.isclose(sum(result["scores"].values()), 1.0, atol=1e-4)
    bad = subprocess.run([*predict, "--text", "ok", "--image", "/no/such.jpg"], **opts)
    assert bad.returncode == 0 and json.loads(bad.stdout)["status"]["image"] == "image_not_found"
    assert DEFAULT_MODEL_DIR.exists()

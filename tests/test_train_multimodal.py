"""`mmsent train` with all four towers (text, image, tabular, audio) on the multimodal demo dump,
small and offline: the shipped model's text and image towers (frozen, images at 64 px), the
demo-multimodal preset's tabular columns and a small audio CNN. The fused model beats every single modality on each slice
where one modality decides; the ablation covers all four; the training split's tabular statistics
are in every checkpoint; a broken clip is a status on its post, which still trains."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image

from mmsent import cli, codes
from mmsent.config import DataCfg, FetchCfg, TrainCfg, TrainRunCfg, from_dict
from mmsent.demo_data import LIKES_PER_REPLY, MODALITIES, PLATFORMS, slice_label
from mmsent.models.checkpoint import load, read_meta
from mmsent.models.model import build_model
from mmsent.preprocess import Preprocessor
from mmsent.tabular import fit_tabular
from mmsent.testing import tiny_model_cfg
from mmsent.train.batches import batches
from mmsent.train.epoch import make_optimizer, modality_dropout, train_epoch
from mmsent.train.labelled import fetch_audio, read_posts
from mmsent.train.report import modes, write_report
from mmsent.train.run import resolve
from mmsent.train.splits import read_split

SLICES = ["image_carries", "tabular_carries", "audio_carries"]


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mm") / "dump"
    argv = ["make-demo-data", str(out), "--modalities", "text,image,tabular,audio",
            "--real", "60", "--slice", "400", "--max-side", "64"]  # fmt: skip
    assert cli.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, dump) -> Path:
    """The shipped model's text tower (MiniLM and its adapters: it reads the captions' sentiment,
    which a tiny random encoder cannot learn from a few hundred posts) and image tower at 64 px,
    both frozen; the preset's tabular columns; a small audio CNN; a fresh gated head."""
    root = tmp_path_factory.mktemp("train")
    tabular = dataclasses.asdict(resolve("demo-multimodal", [])[0].model.tabular)
    cfg = {
        "init_from": "default", "init_exclude": ["head."],
        "model": {"name": "tiny-mm", "text": {"max_length": 32, "max_chunks": 1}, "image": {"image_size": 64},
                  "tabular": {**tabular, "embed_dim": 8, "hidden": 32, "dropout": 0.0},
                  # 8 kHz is enough for the demo's sounds and halves the cost of every spectrogram
                  "audio": {"channels": [8, 16], "out_dim": 32, "dropout": 0.0,
                            "features": {"sample_rate": 8000, "n_fft": 256, "hop": 128, "n_mels": 32,
                                         "max_seconds": 3.0}},
                  "fusion": {"head": "gated", "hidden": 64, "dropout": 0.0, "modality_dropout": 0.2}},
        "data": {"train": str(dump / "posts.jsonl"), "group_column": "slice", "split": [0.6, 0.1, 0.3]},
        # text and image stay frozen (freeze_epochs = epochs): the head, tabular and audio train
        "train": {"epochs": 6, "freeze_epochs": 6, "batch_size": 16, "lr": 1e-3, "head_lr": 3e-3,
                  "seed": 0, "num_threads": 1},
        "out_dir": str(root / "runs"),
    }  # fmt: skip
    (root / "tiny-mm.yaml").write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", "--config", str(root / "tiny-mm.yaml"), "name=mm"]) == 0
    return root / "runs" / "mm"


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_multimodal_dump_is_what_its_readme_says(dump):
    rows = rows_of(dump / "posts.jsonl")
    assert {r["slice"] for r in rows} == {"real_text", *SLICES}
    reading = {"image_carries": "photo_stands_for", "tabular_carries": "reception",
               "audio_carries": "sound_stands_for"}  # fmt: skip
    for r in rows:
        if r["slice"] in reading:  # the rule: the modality decides unless it reads neutral
            assert r["label"] == slice_label(r["caption_reads"], r[reading[r["slice"]]])
    for r in (r for r in rows if r["slice"] == "tabular_carries"):
        lo, hi = LIKES_PER_REPLY[r["reception"]]
        assert lo - 0.5 / r["replies"] <= r["likes"] / r["replies"] <= hi + 0.5 / r["replies"]
    assert {r["platform"] for r in rows if r["platform"]} == set(PLATFORMS)
    column = {"image": "image", "tabular": "likes", "audio": "audio"}
    for r in rows:  # a slice's posts: their text and the modality that decides, nothing else
        if r["slice"] != "real_text":
            has = [m for m, c in column.items() if r[c] is not None]
            assert has == [r["slice"].removesuffix("_carries")], r
    real = [r for r in rows if r["slice"] == "real_text"]
    for c in column.values():  # noise on real text: some posts have it, some do not
        assert 0 < sum(r[c] is not None for r in real) < len(real)
    clips = [r for r in rows if r["audio"] and "broken_audio" not in r]
    suffixes = {Path(r["audio"]).suffix for r in clips}
    assert suffixes == {".wav", ".flac", ".ogg"}
    for r in clips[:20]:
        assert 0.5 < sf.info(str(dump / r["audio"])).duration <= 3.0
    readme = (dump / "README.md").read_text()
    for part in (
        *SLICES,
        "convention of this demo",
        '"ratio"',
        "soundfile",
        "Broken clips",
    ):
        assert part in readme


def test_fused_beats_every_single_modality_where_one_decides(run):
    table = json.loads((run / "metrics.json").read_text())["ablation"]
    for s in SLICES:
        row = table[s]
        single = {m: row[f"{m}_only"]["macro_f1"] for m in MODALITIES}
        assert row["fused"]["macro_f1"] > max(single.values()), (s, row["fused"], single)


def test_report_covers_four_modalities_with_curves(run):
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["ablation"]["all"]) >= set(modes(list(MODALITIES)))
    assert len(modes(list(MODALITIES))) == 9  # fused, 4 alone, 4 left out
    head = (run / "ablation.md").read_text().splitlines()[0]
    for mode in (
        "fused",
        *(f"{x} only" for x in MODALITIES),
        *(f"without {x}" for x in MODALITIES),
    ):
        assert f"| {mode} |" in head
    assert all(f"| {s} |" in (run / "ablation.md").read_text() for s in SLICES)
    history = m["history"]
    assert all(
        {"train_loss", "val_loss", "train_accuracy", "val_accuracy"} <= set(h) for h in history
    )
    with Image.open(run / "curves.png") as im:
        assert im.size[0] > 600
    assert m["test"]["n"] == m["posts"] > 0 and (run / "samples.png").exists()
    # every clip of the dump is counted by status (broken ones too), none lost
    audio = m["data"]["audio"]
    assert sum(sum(s.values()) for s in audio.values()) == m["data"]["train"]["posts"]
    assert any(codes.is_error(c) for s in audio.values() for c in s)
    # the split files keep the references and the tabular columns
    row = rows_of(run / "data" / "test.jsonl")[0]
    assert {"audio", "image", "likes", "replies", "platform"} <= set(row)


def test_tabular_statistics_of_the_training_split_are_in_every_checkpoint(run):
    cfg = from_dict(TrainRunCfg, yaml.safe_load((run / "config.yaml").read_text()))
    meta = json.loads((run / "data" / "labels.json").read_text())
    train = read_split(run, "train", cfg, meta)
    empty = dataclasses.replace(cfg.model.tabular, mean={}, std={}, vocab={})
    fitted = fit_tabular(train.tabular, empty)
    assert set(fitted.vocab["platform"]) == set(PLATFORMS) and fitted.std["likes"] > 0
    for ckpt in [run / "best", *sorted((run / "checkpoints").glob("epoch_*"))]:
        tab = read_meta(ckpt)["model"]["tabular"]
        assert (tab["mean"], tab["std"], tab["vocab"]) == (fitted.mean, fitted.std, fitted.vocab)
    assert load(run / "best").cfg.tabular.vocab == fitted.vocab


def test_evaluate_reproduces_the_four_modality_report(run, tmp_path):
    argv = ["evaluate", str(run / "best"), str(run / "data" / "test.jsonl"), "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    trained, evaluated = (json.loads((d / "metrics.json").read_text()) for d in (run, tmp_path))
    assert evaluated["ablation"] == trained["ablation"] and evaluated["test"] == trained["test"]


def clip(seconds: float = 1.0, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(buf, (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000, format=fmt)
    return buf.getvalue()


def test_broken_audio_is_a_status_and_its_post_still_trains(tmp_path, encoders):
    folder = tmp_path / "dump"
    (folder / "clips").mkdir(parents=True)
    (folder / "clips" / "ok.wav").write_bytes(clip())
    (folder / "clips" / "html.wav").write_bytes(b"<html><body>404 Not Found</body></html>")
    (folder / "clips" / "cut.flac").write_bytes(clip(fmt="FLAC")[:300])
    rows = [
        {"text": "love it", "label": "positive", "audio": "clips/ok.wav", "likes": 12, "platform": "x"},
        {"text": "meh", "label": "neutral", "audio": "clips/html.wav", "likes": "lots"},
        {"text": "awful", "label": "negative", "audio": "clips/gone.wav", "hour": 3},
        {"text": "hmm", "label": "neutral", "audio": "../outside.wav"},
        {"text": "fine", "label": "positive", "audio": "clips/cut.flac", "verified": True},
        {"text": "ok", "label": "negative"},
    ]  # fmt: skip
    (folder / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_model_cfg(encoders[0], None, tabular=True, audio=True)  # text, tabular, audio
    read = read_posts(str(folder / "posts.jsonl"), DataCfg(), tabular=cfg.tabular_columns())
    assert read.stats["audio_errors"] == {codes.AUDIO_URL_FORBIDDEN: 1}
    posts = read.posts
    assert posts.tabular[0] == {"likes": 12, "hour": None, "platform": "x", "verified": None}
    fetch_audio(posts, FetchCfg(retries=0), cfg)
    expected = [codes.OK, codes.AUDIO_DECODE_ERROR, codes.AUDIO_NOT_FOUND,
                codes.AUDIO_URL_FORBIDDEN, codes.AUDIO_DECODE_ERROR, codes.MISSING]  # fmt: skip
    assert posts.audio_status == expected
    assert posts.audio[0] and not any(posts.audio[1:])
    pre = Preprocessor(cfg)
    [(batch, _)] = batches(posts, pre, 8)
    assert batch["audio_status"].tolist() == expected
    assert batch["has_audio"].tolist() == [True] + [False] * 5
    assert batch["has_tabular"].tolist() == [True, False, True, False, True, False]
    assert batch["tabular_status"][1] == codes.TABULAR_INVALID  # "lots" of likes: junk, no crash
    torch.manual_seed(0)
    model = build_model(cfg)
    tc = TrainCfg(batch_size=3)
    opt, sched = make_optimizer(model, tc, total_steps=2)
    stats = train_epoch(model, pre, posts, tc, opt, sched, np.random.default_rng(0),
                        torch.nn.CrossEntropyLoss(), progress=False)  # fmt: skip
    assert stats.n == len(posts) and np.isfinite(stats.loss)
    # the report of a model without an image tower: ablation per modality, no samples picture
    m = write_report(tmp_path / "report", model, posts, samples=4)
    assert m["ablation"]["all"]["audio_only"]["scored"] == 1
    assert set(m["ablation"]["all"]) >= {"text_only", "tabular_only", "without_audio"}
    assert not (tmp_path / "report" / "samples.png").exists()


def test_modality_dropout_hides_one_present_modality_at_most():
    present = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 1, 0]] * 64).bool()
    batch = {f"has_{m}": present[:, j] for j, m in enumerate(MODALITIES)}
    drop = modality_dropout(batch, 1.0, torch.Generator().manual_seed(0))
    hidden = torch.stack([drop[m] for m in MODALITIES], 1)
    assert not (hidden & ~present).any()  # only what is there is hidden
    assert (hidden.sum(1) == (present.sum(1) >= 2).long()).all()  # one, and never the last one
    assert hidden.any(0).all()  # each modality gets hidden somewhere

"""ONNX export and the ONNX Runtime model: the same outputs as torch for every fusion head and
every presence pattern, graphs run only for the posts that need them, int8 with its fp32 recheck,
a reproducible cache rebuilt for a changed checkpoint, `mmsent export` and `mmsent predict`."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsent.models.checkpoint import load, save
from mmsent.models.export import export_onnx
from mmsent.models.model import build_model
from mmsent.models.ort import OrtClassifier
from mmsent.models.runtime import ensure_onnx, load_runtime, resolve_precision
from mmsent.predictor import ModelRunner, Predictor
from mmsent.preprocess import Preprocessor, pack_batch, to_tensors
from mmsent.testing import tiny_model_cfg

CALIBRATION = ["what a lovely day", "this is awful", "meh, it was ok I guess"] * 4


def checkpoint(path: Path, encoders, head="gated", seed=0, four=False, scale=20.0) -> Path:
    """`four`: with the tabular and audio towers too. `scale`: of the head's weights; the four
    towers' model saturates its probabilities at 0 and 1 with 20, at 2 it has 0.64-0.997."""
    torch.manual_seed(seed)
    model = build_model(tiny_model_cfg(*encoders, head=head, tabular=four, audio=four))
    with torch.no_grad():  # a random head that is not near-uniform: labels differ between posts
        for p in model.head.parameters():
            p.mul_(scale)
    return save(model, path)


def posts_batch(cfg, photos):
    """both, text only, image only, nothing usable, a long text (several windows) with an image"""
    return Preprocessor(cfg)(
        ["good day", "bad " * 5, None, "", "so long " * 30, "fine"],
        [photos[0], None, photos[1], None, photos[2], b"not an image"],
    )


@pytest.mark.parametrize("head", ["gated", "cross_attention", "attention", "concat", "late"])
def test_fp32_export_matches_torch(tmp_path, encoders, photos, head):
    ckpt = checkpoint(tmp_path / "ckpt", encoders, head, scale=2)  # logits of a few units
    model = load(ckpt, "cpu")
    manifest = export_onnx(model, tmp_path / "onnx", "fp32", ckpt)
    assert manifest["modalities"] == ["text", "image"] and manifest["fingerprint"]
    ort = OrtClassifier(tmp_path / "onnx")
    batch = posts_batch(model.cfg, photos)
    usable = np.flatnonzero(batch["has_text"] | batch["has_image"])
    tensors = to_tensors({k: v[usable] for k, v in batch.items() if k in _KEYS})
    with torch.inference_mode():
        want, got = model(tensors), ort(tensors)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    if want.weights is not None:
        torch.testing.assert_close(got.weights, want.weights, atol=1e-4, rtol=1e-4)
    if want.attention is not None:
        torch.testing.assert_close(got.attention, want.attention, atol=1e-4, rtol=1e-4)


_KEYS = ("input_ids", "attention_mask", "has_text", "pixels", "has_image")


def test_runner_columns_are_the_torch_runners(tmp_path, encoders, photos):
    """Same output columns, statuses, errors and presence mask; scores equal to 1e-4."""
    ckpt = checkpoint(tmp_path / "ckpt", encoders, scale=2)  # probabilities not all 0 / 1
    export_onnx(load(ckpt, "cpu"), tmp_path / "onnx", "fp32", ckpt)
    torch_runner, onnx_runner = ModelRunner(ckpt, "cpu"), ModelRunner(tmp_path / "onnx")
    assert onnx_runner.model.runtime == "onnx" and onnx_runner.model.precision == "fp32"
    batch = posts_batch(torch_runner.cfg, photos)
    want, got = torch_runner(dict(batch)), onnx_runner(dict(batch))
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        if v.dtype.kind == "f":
            np.testing.assert_allclose(got[k], v, atol=1e-4, equal_nan=True)
        else:
            assert got[k].tolist() == v.tolist(), k
    assert got["error"].tolist()[3] == "empty_text" and got["label"][3] is None
    assert got["image_status"][5] == "not_an_image" and got["modalities"][5] == "text"


def test_graphs_run_only_where_needed(tmp_path, encoders, photos):
    """A batch without images never calls the image graph; a text-only model has none."""
    ckpt = checkpoint(tmp_path / "ckpt", encoders)
    export_onnx(load(ckpt, "cpu"), tmp_path / "onnx", "fp32", ckpt)
    ort = OrtClassifier(tmp_path / "onnx")
    calls = []
    session = ort.towers["image"].session
    ort.towers["image"].session = _Counting(session, calls)
    pre = Preprocessor(ort.cfg)
    with torch.inference_mode():
        ort(to_tensors({k: v for k, v in pre(["a", "b"]).items() if k in _KEYS}))
        assert calls == []
        ort(to_tensors({k: v for k, v in pre(["a", None], [None, photos[0]]).items() if k in _KEYS}))  # fmt: skip
    assert [len(c["pixels"]) for c in calls] == [1]  # the one post with an image

    torch.manual_seed(0)
    text_only = save(build_model(tiny_model_cfg(encoders[0], None)), tmp_path / "text-only")
    export_onnx(load(text_only, "cpu"), tmp_path / "text-only-onnx", "fp32", text_only)
    assert not (tmp_path / "text-only-onnx" / "image.onnx").exists()
    [out] = Predictor(tmp_path / "text-only-onnx").predict([{"text": "hi", "image": photos[0]}])
    assert out["status"]["image"] == "unused" and out["label"] is not None


class _Counting:
    def __init__(self, session, calls):
        self.session, self.calls = session, calls

    def run(self, names, feed):
        self.calls.append(feed)
        return self.session.run(names, feed)


def test_int8_export_rechecks_uncertain_posts(tmp_path, encoders, photos):
    ckpt = checkpoint(tmp_path / "ckpt", encoders)
    manifest = export_onnx(load(ckpt, "cpu"), tmp_path / "int8", "int8", ckpt, CALIBRATION)
    text = manifest["graphs"]["text"]
    assert text["int8"]["int8_layers"] > 0 and text["fp32_file"] == "text-fp32.onnx"
    assert (tmp_path / "int8" / "text-fp32.onnx").stat().st_size > (
        tmp_path / "int8" / "text.onnx"
    ).stat().st_size  # the int8 graph is the smaller one
    torch_runner, int8 = ModelRunner(ckpt, "cpu"), ModelRunner(tmp_path / "int8")
    assert int8.model.precision == "int8"
    batch = posts_batch(torch_runner.cfg, photos)
    want, got = torch_runner(dict(batch)), int8(dict(batch))
    assert got["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got["score_positive"], want["score_positive"], atol=0.05, equal_nan=True)  # fmt: skip
    assert int8.model.posts == 5  # the usable ones

    int8.model.recheck_margin = 0.0  # int8 alone: close to fp32, not equal
    usable = np.flatnonzero(batch["has_text"])
    tensors = to_tensors({k: v[usable] for k, v in batch.items() if k in _KEYS})
    with torch.inference_mode():
        a, b = torch_runner.model(tensors).logits, int8.model(tensors).logits
    assert 0 < float((a - b).abs().max()) < 0.1 * float(a.abs().max())


def wav(seconds: float, hz: float) -> bytes:
    import soundfile

    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    soundfile.write(buf, 0.3 * np.sin(2 * np.pi * hz * t), 16000, format="WAV")
    return buf.getvalue()


def four_batch(cfg, photos):
    """The four modalities in many combinations; the last post has nothing usable."""
    a, b, full = wav(0.5, 440), wav(1.2, 220), wav(2.0, 330)  # full: max_seconds, no padding
    rows = [  # text, image, audio, tabular
        ("good day", photos[0], a, {"likes": 40, "platform": "x", "verified": "true"}),
        (None, None, b, None),
        (None, None, None, {"hour": 3, "platform": "tiktok"}),
        ("so long " * 30, None, full, None),
        (None, photos[1], None, {"likes": 2, "hour": 20, "platform": "other", "verified": "false"}),
        ("fine", b"not an image", b"not audio", {"likes": "lots"}),
        (None, photos[2], a, None),
        (None, None, None, None),
    ]
    texts, images, audio, tabular = map(list, zip(*rows, strict=True))
    return Preprocessor(cfg)(texts, images, audio=audio, tabular=tabular)


FOUR = ["text+image+tabular+audio", "audio", "tabular", "text+audio", "image+tabular", "text", "image+audio", ""]  # fmt: skip


@pytest.mark.parametrize("head", ["gated", "cross_attention"])
def test_four_modalities_match_torch(tmp_path, encoders, photos, head):
    """Tabular and audio graphs beside text and image: the torch runner's columns, probabilities
    to 1e-4, on every presence pattern and on batches where a whole modality is absent."""
    ckpt = checkpoint(tmp_path / "ckpt", encoders, head, four=True, scale=2)
    manifest = export_onnx(load(ckpt, "cpu"), tmp_path / "onnx", "fp32", ckpt)
    assert manifest["modalities"] == ["text", "image", "tabular", "audio"]
    torch_runner, onnx_runner = ModelRunner(ckpt, "cpu"), ModelRunner(tmp_path / "onnx")
    batch = four_batch(torch_runner.cfg, photos)
    for rows in (range(8), [1, 2, 3, 5], [0, 5, 6], [4]):  # all; no image; no tabular; no text
        sub = {k: v[list(rows)] for k, v in batch.items()}
        want, got = torch_runner(dict(sub)), onnx_runner(pack_batch(sub))  # packed: as Ray moves it
        assert sorted(got) == sorted(want)
        assert got["modalities"].tolist() == want["modalities"].tolist() == [FOUR[i] for i in rows]
        for k, v in want.items():
            if v.dtype.kind == "f":
                np.testing.assert_allclose(got[k], v, atol=1e-4, equal_nan=True, err_msg=k)
            else:
                assert got[k].tolist() == v.tolist(), k
    tensors = to_tensors({k: v[:-1] for k, v in batch.items()})  # the usable posts
    with torch.inference_mode():
        want, got = torch_runner.model(tensors), onnx_runner.model(tensors)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    assert float((got.logits.softmax(-1) - want.logits.softmax(-1)).abs().max()) < 1e-4
    torch.testing.assert_close(got.weights, want.weights, atol=1e-4, rtol=1e-4)
    if want.attention is not None:  # over the image's, tabular's and audio's tokens
        torch.testing.assert_close(got.attention, want.attention, atol=1e-4, rtol=1e-4)


def test_int8_export_of_four_modalities(tmp_path, encoders, photos):
    """int8 quantizes the text encoder only: the other graphs are fp32's, labels torch's."""
    ckpt = checkpoint(tmp_path / "ckpt", encoders, four=True, scale=2)
    manifest = export_onnx(load(ckpt, "cpu"), tmp_path / "int8", "int8", ckpt, CALIBRATION)
    assert [m for m, g in manifest["graphs"].items() if "int8" in g] == ["text"]
    files = {p.name for p in (tmp_path / "int8").glob("*.onnx")}
    assert files == {"text.onnx", "text-fp32.onnx", "image.onnx", "tabular.onnx", "audio.onnx", "head.onnx"}  # fmt: skip
    torch_runner, int8 = ModelRunner(ckpt, "cpu"), ModelRunner(tmp_path / "int8")
    batch = four_batch(torch_runner.cfg, photos)
    want, got = torch_runner(dict(batch)), int8(dict(batch))
    assert got["label"].tolist() == want["label"].tolist()
    np.testing.assert_allclose(got["score_positive"], want["score_positive"], atol=0.05, equal_nan=True)  # fmt: skip


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_cache_is_reproducible_and_follows_the_checkpoint(tmp_path, encoders, monkeypatch):
    import mmsent.models.export as export

    monkeypatch.setattr(export, "calibration_texts", lambda: CALIBRATION)
    ckpt = checkpoint(tmp_path / "ckpt", encoders)
    built = ensure_onnx(ckpt, "int8")
    assert built == ckpt / "onnx-int8"
    first = _digests(built)
    export_onnx(load(ckpt, "cpu"), tmp_path / "again", "int8", ckpt)
    assert _digests(tmp_path / "again") == first  # the same bytes, built twice
    assert ensure_onnx(ckpt, "int8") == built and _digests(built) == first  # found, not rebuilt

    checkpoint(tmp_path / "ckpt", encoders, seed=1)  # retrained in place: other weights
    ensure_onnx(ckpt, "int8")
    assert _digests(built)["head.onnx"] != first["head.onnx"]  # the head is what was retrained
    meta = json.loads((built / "onnx.json").read_text())
    assert meta["fingerprint"] == export.fingerprint(ckpt)


def test_read_only_checkpoint_caches_in_the_user_cache(tmp_path, encoders, monkeypatch):
    import mmsent.models.runtime as runtime

    ckpt = checkpoint(tmp_path / "ckpt", encoders)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # tests run as root, who may write any folder: the checkpoint's is made to look read-only
    monkeypatch.setattr(runtime.os, "access", lambda p, mode: Path(p) != ckpt)
    model = load_runtime(ckpt, "onnx", "fp32")
    assert model.precision == "fp32" and not (ckpt / "onnx-fp32").exists()
    [cached] = (tmp_path / "cache" / "mmsent" / "onnx").glob("*-fp32")
    assert json.loads((cached / "onnx.json").read_text())["fingerprint"] in cached.name


def test_precision_rules():
    assert resolve_precision("onnx", "auto", cuda=False) == "int8"
    assert resolve_precision("onnx", "auto", cuda=True) == "fp32"
    assert resolve_precision("torch", "auto", cuda=False) == "fp32"
    assert resolve_precision("torch", "bf16", cuda=False) == "bf16"
    from mmsent.config import ConfigError

    for runtime, precision in (("torch", "int8"), ("onnx", "fp16"), ("torch", "fp16"), ("tf", "auto")):  # fmt: skip
        with pytest.raises(ConfigError):
            resolve_precision(runtime, precision, cuda=False)


def test_torch_bf16_autocast_on_cpu(tmp_path, encoders, photos):
    """precision: bf16 runs under autocast (the path CUDA takes with bf16/fp16), same labels
    for posts that are not close calls, same columns."""
    ckpt = checkpoint(tmp_path / "ckpt", encoders)
    fp32, bf16 = ModelRunner(ckpt, "cpu"), ModelRunner(ckpt, "cpu", precision="bf16")
    assert bf16.model.precision == "bf16"
    batch = posts_batch(fp32.cfg, photos)
    want, got = fp32(dict(batch)), bf16(dict(batch))
    assert sorted(got) == sorted(want)
    assert got["score_positive"].dtype == np.float32
    np.testing.assert_allclose(got["score_positive"], want["score_positive"], atol=0.05, equal_nan=True)  # fmt: skip


def test_export_cli_and_predict_runtime(tmp_path, encoders, capsys):
    from mmsent.cli import main

    ckpt = checkpoint(tmp_path / "ckpt", encoders)
    assert main(["export", str(ckpt), str(tmp_path / "out"), "--quantize", "int8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["files"]) == {"text.onnx", "text-fp32.onnx", "image.onnx", "head.onnx"}
    for subset in ("text", "image", "text+image"):
        r = report["parity"][subset]
        assert r["n"] > 0 and r["label_agreement"] >= 0.9, (subset, r)
    manifest = json.loads((tmp_path / "out" / "onnx.json").read_text())
    assert manifest["parity"] == report["parity"]

    assert main(["predict", "--text", "good", "--model", str(tmp_path / "out"), "--runtime", "onnx"]) in (0, 1)  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["status"]["text"] == "ok" and out["label"] is not None
    assert main(["predict", "--text", "good", "--model", str(ckpt), "--precision", "int8"]) == 2
    assert "ONNX Runtime's" in capsys.readouterr().err

"""The error boundary (mmsent.boundary.isolate) and the stages that run behind it: a row that makes
a batch raise costs its own result (internal_error + error_detail), never the batch; the batch is
retried first, then split until the failing rows are found, and the other rows are scored."""

from __future__ import annotations

import numpy as np
import pytest

from mmsent import codes
from mmsent.boundary import concat_columns, describe, isolate


class Poison(str):
    """A text that breaks whatever touches it the way no listed input does."""

    def encode(self, *args, **kwargs):
        raise RuntimeError("poison")


def test_isolate_finds_the_failing_rows_and_keeps_the_rest():
    rows, calls = list(range(16)), []

    def work(lo, hi):
        calls.append((lo, hi))
        if any(rows[i] in (3, 11) for i in range(lo, hi)):
            raise ValueError(f"bad row in {lo}:{hi}")
        return [r * 10 for r in rows[lo:hi]]

    out = isolate(work, 16, lambda parts: sum(parts, []), lambda lo, hi, e: [describe(e)])
    assert out[:3] == [0, 10, 20] and out[4:11] == [40, 50, 60, 70, 80, 90, 100]
    assert out[3] == "ValueError: bad row in 3:4" and out[11] == "ValueError: bad row in 11:12"
    assert len(out) == 16 and len(calls) <= 2 * 2 * 4 + 1  # k log n, not n


def test_isolate_retries_a_passing_fault_before_splitting():
    state = {"failures": 1}

    def work(lo, hi):
        if state["failures"]:
            state["failures"] -= 1
            raise MemoryError("once")
        return list(range(lo, hi))

    assert isolate(work, 8, lambda p: sum(p, []), lambda lo, hi, e: ["x"], retries=1) == list(
        range(8)
    )


@pytest.fixture(scope="module")
def pre():
    from mmsent.config import ModelCfg, from_dict
    from mmsent.models.checkpoint import read_meta
    from mmsent.preprocess import Preprocessor

    return Preprocessor(from_dict(ModelCfg, read_meta()["model"]))


def test_a_row_that_breaks_the_preprocessor_is_its_own_internal_error(pre):
    batch = pre(["a fine day", Poison("x"), "a bad day"])
    assert batch["text_status"].tolist() == [codes.OK, codes.INTERNAL_ERROR, codes.OK]
    assert batch["has_text"].tolist() == [True, False, True]
    assert batch["error_detail"].tolist() == [None, "RuntimeError: poison", None]


def test_a_row_that_breaks_the_model_is_its_own_internal_error(pre):
    from mmsent.predictor import ModelRunner
    from mmsent.preprocess import pack_batch
    from mmsent.sample_data import real_photos

    runner = ModelRunner()
    photo = real_photos(max_side=128)[0][1]
    batch = pack_batch(pre(["a fine day", "a photo", "a bad day"], [None, photo, photo]))
    batch["pixels"][2] = batch["pixels"][2][:100]  # a row of pixels cut short: reshape fails
    out = runner(batch)
    assert out["error"].tolist() == [None, None, codes.INTERNAL_ERROR]
    assert out["label"][2] is None and np.isnan(out["score_positive"][2])
    assert out["label"][0] in runner.cfg.labels and out["modalities"].tolist()[:2] == [
        "text",
        "text+image",
    ]
    assert out["error_detail"][2].startswith("ValueError")


def test_a_record_that_cannot_become_a_row_is_its_rows_internal_error(tmp_path):
    import pyarrow as pa

    from mmsent.config import FetchCfg, ScoreCfg
    from mmsent.io.dumps import Item
    from mmsent.pipeline.job import model_config
    from mmsent.pipeline.plan import make_plan
    from mmsent.pipeline.rows import read_block
    from mmsent.pipeline.stages import preprocess

    (tmp_path / "d.jsonl").write_text('{"id": "ok", "text": "a fine day"}\n')
    plan = make_plan(str(tmp_path / "d.jsonl"), ScoreCfg(), set())
    plan.passthrough = [("x", "x", pa.string())]
    loop: list = []
    loop.append(loop)  # a value no column can carry: json.dumps raises
    good = {"id": "ok", "text": "a fine day"}
    items = [Item(0, good), Item(1, {"id": "bad", "text": "t", "x": loop}), Item(2, good)]
    block = read_block(plan.files[0], items, plan)
    out = preprocess(block, model_cfg=model_config(None), fetch_cfg=FetchCfg()).to_pydict()
    assert out["record_error"] == [None, codes.INTERNAL_ERROR, None]
    assert out["id"] == ["ok", None, "ok"] and out["input_row"] == [0, 1, 2]
    assert out["has_text"] == [True, False, True]
    assert out["error_detail"][1].startswith("ValueError")


def test_concat_columns_keeps_row_order():
    a = {"x": np.array([1, 2]), "y": np.array(["a", "b"], dtype=object)}
    b = {"x": np.array([3]), "y": np.array(["c"], dtype=object)}
    out = concat_columns([a, b])
    assert out["x"].tolist() == [1, 2, 3] and out["y"].tolist() == ["a", "b", "c"]

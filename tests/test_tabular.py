"""Tabular inputs (mmsent.tabular: training statistics, the unknown bucket, missing masks, junk
values) and the tabular_mlp tower.

    .venv/bin/python -m pytest tests/test_tabular.py -q
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsent import codes
from mmsent.config import TabularTowerCfg, from_dict, to_dict
from mmsent.models.towers import build_tower
from mmsent.tabular import encode_tabular, fit_tabular

BASE = TabularTowerCfg(
    numeric=["likes", "hour"], categorical=["platform", "verified"], log_numeric=["likes"]
)
TRAIN = [
    {"likes": 0, "hour": 1, "platform": "x", "verified": True},
    {"likes": 9, "hour": "13", "platform": "x", "verified": False},
    {"likes": "99", "hour": 23.0, "platform": "insta", "verified": "true"},
    {"likes": None, "hour": "", "platform": "tiktok"},
    {"likes": "junk", "platform": ["not", "a", "category"]},
]
CFG = fit_tabular(TRAIN, BASE)


def test_fit_computes_statistics_of_the_valid_values():
    likes = np.log1p([0.0, 9.0, 99.0])  # the log columns: statistics of log1p(x)
    assert CFG.mean["likes"] == pytest.approx(likes.mean())
    assert CFG.std["likes"] == pytest.approx(likes.std())
    assert CFG.mean["hour"] == pytest.approx(np.mean([1, 13, 23]))
    assert CFG.vocab == {"platform": ["x", "insta", "tiktok"], "verified": ["true", "false"]}


def test_fit_vocabulary_caps_and_degenerate_columns():
    rows = [{"a": 5, "c": c} for c in "aaabbc"] + [{"c": 7}, {"c": 7.0}]
    cfg = fit_tabular(rows, TabularTowerCfg(numeric=["a", "b"], categorical=["c"], min_count=2))
    assert cfg.vocab["c"] == ["a", "7", "b"]  # by count, then name; "c" seen once; 7 == 7.0
    assert (cfg.mean["a"], cfg.std["a"]) == (5.0, 1.0)  # one value: std 1, not 0
    assert (cfg.mean["b"], cfg.std["b"]) == (0.0, 1.0)  # no values at all
    capped = fit_tabular(rows, TabularTowerCfg(categorical=["c"], max_categories=1))
    assert capped.vocab["c"] == ["a"]


def test_encode_normalises_and_maps_unknown_categories():
    b = encode_tabular([{"likes": 9, "hour": "13", "platform": "snapchat", "verified": False}], CFG)
    z_likes = (math.log1p(9) - CFG.mean["likes"]) / CFG.std["likes"]
    z_hour = (13 - CFG.mean["hour"]) / CFG.std["hour"]
    np.testing.assert_allclose(b["tab_num"][0], [z_likes, z_hour], rtol=1e-6)
    assert list(b["tab_cat"][0]) == [1, 3]  # an unknown platform: 1; "false", vocab entry 1: 3
    assert not b["tab_missing"].any() and b["has_tabular"][0]
    assert b["tabular_status"][0] == codes.OK


def test_strings_from_csv_read_like_json_values():
    json_row = {"likes": 9, "hour": 13, "platform": "x", "verified": True}
    csv_row = {"likes": " 9 ", "hour": "13.0", "platform": " x", "verified": "true"}
    a, b = encode_tabular([json_row], CFG), encode_tabular([csv_row], CFG)
    np.testing.assert_array_equal(a["tab_num"], b["tab_num"])
    np.testing.assert_array_equal(a["tab_cat"], b["tab_cat"])


def test_missing_values_are_masked_and_an_all_missing_row_is_absent():
    rows = [
        {"likes": 3, "hour": "NA", "platform": "", "verified": None},
        {"likes": float("nan"), "hour": "n/a", "platform": "null"},
        {},
        None,
    ]
    b = encode_tabular(rows, CFG)
    assert b["tab_missing"].tolist()[0] == [False, True, True, True]
    assert b["tab_missing"][1:].all() and not b["tab_cat"][1:].any()
    assert b["tab_num"][0, 1] == 0.0 and b["tab_cat"][0].tolist() == [0, 0]
    assert b["has_tabular"].tolist() == [True, False, False, False]
    assert b["tabular_status"].tolist() == [codes.OK] + [codes.MISSING] * 3


JUNK = ["twelve", "1e400", float("inf"), 10**400, [1], {"a": 1}, b"12", Decimal("sNaN"), "9" * 65]


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_junk_in_a_numeric_column_is_missing_and_flagged(junk):
    b = encode_tabular([{"likes": junk, "platform": "x"}], CFG)
    assert b["tab_missing"][0].tolist() == [True, True, False, True]
    assert b["has_tabular"][0]  # the valid platform still counts
    assert b["tabular_status"][0] == codes.TABULAR_INVALID
    assert "likes" in b["tabular_detail"][0]


@pytest.mark.parametrize(
    "junk",
    [[1], {"a": 1}, b"x", float("inf"), 10**5000],
    ids=["list", "dict", "bytes", "inf", "huge"],
)
def test_junk_in_a_categorical_column_is_missing_and_flagged(junk):
    b = encode_tabular([{"platform": junk, "hour": 3}], CFG)
    assert b["tab_missing"][0].tolist() == [True, False, True, True]
    assert b["tabular_status"][0] == codes.TABULAR_INVALID and b["has_tabular"][0]


def test_junk_only_rows_and_non_mapping_rows():
    b = encode_tabular([{"platform": {"nested": 1}, "hour": [2]}, "a string row"], CFG)
    assert b["tabular_status"].tolist() == [codes.TABULAR_INVALID] * 2
    assert not b["has_tabular"].any() and b["tab_missing"].all()


def test_extreme_values_are_clipped():
    b = encode_tabular([{"hour": 1e12}, {"hour": -1e12}], CFG)
    assert b["tab_num"][:, 1].tolist() == [CFG.clip, -CFG.clip]


def test_unfitted_or_malformed_configs_are_refused():
    with pytest.raises(ValueError, match="fit_tabular"):
        encode_tabular([{}], BASE)
    with pytest.raises(ValueError, match="fit_tabular"):
        build_tower(BASE)
    with pytest.raises(ValueError, match="at least one column"):
        TabularTowerCfg()
    with pytest.raises(ValueError, match="each once"):
        TabularTowerCfg(numeric=["a"], categorical=["a"])
    with pytest.raises(ValueError, match="log_numeric"):
        TabularTowerCfg(categorical=["a"], log_numeric=["a"])


def test_statistics_survive_the_checkpoint_config_round_trip():
    again = from_dict(TabularTowerCfg, json.loads(json.dumps(to_dict(CFG))))
    assert again == CFG


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.dictionaries(st.sampled_from(["likes", "hour", "platform", "x"]), VALUES)))
def test_fuzz_encode_never_raises_and_stays_consistent(rows):
    b = encode_tabular(rows, CFG)
    assert set(b["tabular_status"]) <= {codes.OK, codes.MISSING, codes.TABULAR_INVALID}
    assert (b["has_tabular"] == ~b["tab_missing"].all(1)).all()
    assert np.isfinite(b["tab_num"]).all() and (np.abs(b["tab_num"]) <= CFG.clip).all()
    assert not b["tab_num"][b["tab_missing"][:, :2]].any()
    assert ((b["tab_cat"] == 0) == b["tab_missing"][:, 2:]).all()


def tensors(rows):
    b = encode_tabular(rows, CFG)
    return {k: torch.from_numpy(b[k]) for k in ("tab_num", "tab_cat", "tab_missing")}


def test_tower_shapes_and_masks():
    tower = build_tower(CFG).eval()
    rows = [TRAIN[0], {"likes": 5}, {}]
    with torch.no_grad():
        out = tower(tensors(rows))
    assert tower.modality == "tabular" and tower.out_dim == CFG.hidden
    assert out.pooled.shape == (3, CFG.hidden) and out.tokens.shape == (3, 4, CFG.hidden)
    assert out.token_mask.tolist() == [[True] * 4, [True, False, False, False], [False] * 4]
    assert torch.isfinite(out.pooled).all()


def test_a_missing_value_does_not_read_as_its_number():
    tower = build_tower(CFG).eval()
    inputs = tensors([{"hour": 4}])
    with torch.no_grad():
        a = tower(inputs).pooled
        inputs["tab_num"][0, 0] = 123.0  # "likes" is missing: its slot's value must not count
        b = tower(inputs).pooled
        inputs["tab_missing"][0, 0] = False  # now present: it does
        c = tower(inputs).pooled
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_tower_trains_and_freezes():
    tower = build_tower(CFG).train()
    out = tower(tensors(TRAIN))
    (out.pooled.sum() + out.tokens.sum()).backward()
    assert all(p.grad is not None for p in tower.parameters())
    tower.set_trainable(0)
    assert not any(p.requires_grad for p in tower.parameters())
    tower.set_trainable(1)
    trainable = {n.split(".")[0] for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable == {"mlp", "token_proj"}
    tower.set_trainable(-1)
    assert all(p.requires_grad for p in tower.parameters())

"""The shipped default model (mmsent/assets/default_model) is built by one command, and checked
against VADER as an evaluation step of that run:

    mmsent train --config default          # mmsent/presets/train/default.yaml; see its comments
    mmsent train --config default data.limit=50 train.epochs=1 export_to=/tmp/m   # a smoke run
    python -m mmsent.train.default_model   # the README's table, from the shipped model's card

What is particular to that model lives here: its held-out split (`splits`, cut as the run cuts
it), the comparison with VADER on the same held-out posts per source (the run's `vader` step),
and the table of its card.
"""

from __future__ import annotations

import argparse

import numpy as np

from ..models.checkpoint import DEFAULT_MODEL_DIR, read_meta
from ..preprocess import Preprocessor
from .batches import predict_posts
from .data import VADER_SOURCES, Posts
from .metrics import report
from .run import resolve
from .splits import make_splits

PRESET = "default"  # mmsent/presets/train/default.yaml
SOURCE_NAMES = {
    "tweets": "tweets",
    "movie_snippets": "movie-review snippets",
    "nyt_editorials": "NYT editorial snippets",
}


def splits() -> tuple[Posts, Posts, Posts]:
    """(train, validation, held-out test) posts of the default preset, as its run cuts them."""
    parts, _ = make_splits(resolve(PRESET, [])[0])
    return parts["train"], parts["val"], parts["test"]


def vader_labels(texts: list[str], threshold: float = 0.05) -> np.ndarray:
    """VADER's usual 3 classes of its compound score (>= 0.05 positive, <= -0.05 negative)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(t)["compound"] for t in texts])
    return np.where(compound >= threshold, 2, np.where(compound <= -threshold, 0, 1))


def held_out_report(model, pre: Preprocessor, test: Posts, probs=None) -> dict:
    """Macro-F1 and accuracy per source, of the model and of VADER, on the same held-out posts."""
    if probs is None:
        probs, _ = predict_posts(model, pre, test)
    pred, vader = probs.argmax(1), vader_labels(test.texts)
    out = {}
    for source in VADER_SOURCES:
        m = np.array([s == source for s in test.sources])
        figures = {}
        for who, labels in (("model", pred), ("vader", vader)):
            r = report(test.labels[m], labels[m], model.cfg.labels)
            figures[who] = {
                "macro_f1": round(r["macro_f1"], 4),
                "accuracy": round(r["accuracy"], 4),
            }
        out[source] = {"n": int(m.sum()), **figures}
    return out


# the quality guard of an int8 runtime, per held-out source (docs/runtime.md)
MIN_AGREEMENT, MAX_F1_DROP = 0.99, 0.005


def int8_report(labels: list[str], test: Posts, fp32, int8, rechecked: float) -> dict:
    """int8 against fp32 per source: label agreement, macro-F1 of each; `passed` the guard."""
    out, passed = {}, True
    for source in VADER_SOURCES:
        m = np.array([s == source for s in test.sources])
        a, b = fp32[m].argmax(1), int8[m].argmax(1)
        f_fp32 = report(test.labels[m], a, labels)["macro_f1"]
        f_int8 = report(test.labels[m], b, labels)["macro_f1"]
        agree = float((a == b).mean())
        passed &= agree >= MIN_AGREEMENT and f_fp32 - f_int8 <= MAX_F1_DROP
        out[source] = {
            "n": int(m.sum()),
            "label_agreement": round(agree, 4),
            "macro_f1_fp32": round(f_fp32, 4),
            "macro_f1_int8": round(f_int8, 4),
        }
    rule = f"label agreement >= {MIN_AGREEMENT:.0%}, macro-F1 within {MAX_F1_DROP * 100:.1f} points"
    return {
        "sources": out,
        "rechecked_in_fp32": round(rechecked, 4),
        "guard": rule,
        "passed": passed,
    }


def int8_guard(model, posts: Posts) -> dict:
    """The `int8` step of `mmsent train`: the model's ONNX int8 export (built in a temporary
    folder) against the model itself in fp32, on the held-out posts; the card's `int8` entry."""
    import tempfile

    from ..models.export import export_onnx
    from ..models.ort import OrtClassifier

    model = model.cpu().eval()
    pre = Preprocessor(model.cfg)
    fp32, _ = predict_posts(model, pre, posts)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, tmp, "int8")
        ort = OrtClassifier(tmp)
        int8, _ = predict_posts(ort, pre, posts)
    return {"int8": int8_report(model.cfg.labels, posts, fp32, int8, ort.rechecked / ort.posts)}


def vader_comparison(model, posts: Posts) -> dict:
    """The `vader` evaluation step of `mmsent train`: the card's `held_out` table."""
    return {"held_out": held_out_report(model, Preprocessor(model.cfg), posts)}


def render_card(card: dict) -> str:
    """The README's held-out table, rendered from the checkpoint's own card (one source of truth)."""
    rows = [
        "| held-out source | posts | macro-F1 model | macro-F1 VADER | accuracy model | accuracy VADER |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for source, r in card["held_out"].items():
        m, v = r["model"], r["vader"]
        cells = [SOURCE_NAMES.get(source, source), str(r["n"])]
        cells += [f"{x:.3f}" for x in (m["macro_f1"], v["macro_f1"], m["accuracy"], v["accuracy"])]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="checkpoint with a card")
    ap.add_argument("--card", action="store_true", help="print the card's table (the default)")
    args = ap.parse_args(argv)
    print(render_card(read_meta(args.model)["card"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

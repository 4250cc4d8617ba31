"""Rebuild the shipped default model (mmsent/assets/default_model) from the human-rated texts in
mmsent/data/vader-ground-truth, and measure it against VADER on a held-out split of every source.

    python -m mmsent.train.default_model              # ~15 min on 2 idle CPU cores
    python -m mmsent.train.default_model --epochs 1 --limit 2000 --out /tmp/m   # a quick smoke run
    python -m mmsent.train.default_model --card       # the README's table, from the checkpoint

Text tower: all-MiniLM-L6-v2 (bundled) with low-rank adapters on every layer, fine-tuned; only
the adapters and the fusion head are stored. Image tower: EfficientNet-Lite0 (ImageNet), frozen.
No image-text sentiment data exists here, so 30% of training posts carry a real photo unrelated
to their label: the gated head learns to give such images little weight rather than noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from ..config import ModelCfg, TrainCfg, load_config, to_dict
from ..models.checkpoint import DEFAULT_MODEL_DIR, read_meta, save
from ..models.model import build_model
from ..preprocess import Preprocessor
from ..sample_data import real_photos
from .data import VADER_SOURCES, Posts, read_vader, stratified_split
from .loop import class_weights, evaluate, make_optimizer, predict_posts, train_epoch
from .metrics import report

SPLIT = (0.7, 0.1, 0.2)  # train / validation / held-out test, within every (source, label)
SEED = 13
PHOTO_RATE = 0.3


def default_cfg() -> ModelCfg:
    return load_config(ModelCfg, "default", kind="models")  # mmsent/presets/models/default.yaml


def splits(posts: Posts | None = None) -> tuple[Posts, Posts, Posts]:
    posts = posts or read_vader()
    idx = stratified_split(
        list(zip(posts.sources, posts.labels.tolist(), strict=True)), SPLIT, SEED
    )
    return tuple(posts.take(i) for i in idx)


def vader_labels(texts: list[str], threshold: float = 0.05) -> np.ndarray:
    """VADER's usual 3 classes of its compound score (>= 0.05 positive, <= -0.05 negative)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(t)["compound"] for t in texts])
    return np.where(compound >= threshold, 2, np.where(compound <= -threshold, 0, 1))


def held_out_report(model, pre: Preprocessor, test: Posts) -> dict:
    """Macro-F1 and accuracy per source, of the model and of VADER, on the same held-out posts."""
    probs, _ = predict_posts(model, pre, test)
    pred, vader = probs.argmax(1), vader_labels(test.texts)
    out = {}
    for source in VADER_SOURCES:
        m = np.array([s == source for s in test.sources])
        r_model = report(test.labels[m], pred[m], model.cfg.labels)
        r_vader = report(test.labels[m], vader[m], model.cfg.labels)
        out[source] = {
            "n": int(m.sum()),
            "model": {
                "macro_f1": round(r_model["macro_f1"], 4),
                "accuracy": round(r_model["accuracy"], 4),
            },
            "vader": {
                "macro_f1": round(r_vader["macro_f1"], 4),
                "accuracy": round(r_vader["accuracy"], 4),
            },
        }
    return out


def render_card(card: dict) -> str:
    """The README's held-out table, rendered from the checkpoint's own card (one source of truth)."""
    names = {
        "tweets": "tweets",
        "movie_snippets": "movie-review snippets",
        "nyt_editorials": "NYT editorial snippets",
    }
    rows = ["| held-out source | posts | macro-F1 model | macro-F1 VADER | accuracy model | accuracy VADER |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for source, r in card["held_out"].items():
        m, v = r["model"], r["vader"]
        rows.append(f"| {names.get(source, source)} | {r['n']} | {m['macro_f1']:.3f} | {v['macro_f1']:.3f} "
                    f"| {m['accuracy']:.3f} | {v['accuracy']:.3f} |")  # fmt: skip
    return "\n".join(rows)


def attach_photos(posts: Posts, rate: float, rng: np.random.Generator) -> Posts:
    photos = [b for _, b in real_photos(max_side=256)]
    images = [
        photos[rng.integers(len(photos))] if rng.random() < rate else None
        for _ in range(len(posts))
    ]
    return Posts(posts.texts, posts.labels, images, posts.sources)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--card", action="store_true", help="print the model card table of --out and exit"
    )
    ap.add_argument(
        "--limit", type=int, default=0, help="train on this many posts only (smoke runs)"
    )
    args = ap.parse_args(argv)
    if args.card:
        print(render_card(read_meta(args.out)["card"]))
        return {}
    torch.manual_seed(SEED)
    if args.threads:  # one thread is much faster than two on a machine shared with other work
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(SEED)
    train, val, test = splits()
    if args.limit:
        train = train.take(rng.permutation(len(train))[: args.limit])
    train = attach_photos(train, PHOTO_RATE, rng)
    cfg = default_cfg()
    tcfg = TrainCfg(epochs=args.epochs, batch_size=32, lr=4e-4, head_lr=1e-3, seed=SEED)
    model, pre = build_model(cfg), Preprocessor(cfg)
    steps = args.epochs * -(-len(train) // tcfg.batch_size)
    opt, sched = make_optimizer(model, tcfg, steps)
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(train.labels, len(cfg.labels)))
    best, best_f1, history, t0 = None, -1.0, [], time.time()
    for epoch in range(args.epochs):
        loss = train_epoch(
            model, pre, train, tcfg, opt, sched, rng, loss_fn, desc=f"epoch {epoch + 1}"
        ).loss
        r = evaluate(model, pre, val)
        history.append({"epoch": epoch + 1, "train_loss": round(loss, 4), "val_macro_f1": round(r["macro_f1"], 4),
                        "val_accuracy": round(r["accuracy"], 4)})  # fmt: skip
        print(json.dumps(history[-1]), flush=True)
        if r["macro_f1"] > best_f1:
            best_f1, best = r["macro_f1"], copy.deepcopy(model.trained_state_dict())
            save(
                model, args.out, extra={"card": {"history": history, "partial": True}}
            )  # survives a kill
    model.load_state_dict(best, strict=False)
    held_out = held_out_report(model, pre, test)
    card = {
        "trained_on": "VADER ground truth (Hutto & Gilbert 2014): tweets, movie-review snippets, NYT editorial "
        "snippets; 3 classes from the mean human rating (< -0.5 negative, > 0.5 positive)",
        "not_trained_on": "any image-text sentiment data (none is available); images are read but given little weight",
        "split": {"fractions": SPLIT, "seed": SEED, "stratified_by": "source and label"},
        "train_cfg": to_dict(tcfg),
        "history": history,
        "held_out": held_out,
        "train_seconds": round(time.time() - t0),
    }
    save(model, args.out, extra={"card": card})
    print(json.dumps(held_out, indent=2))
    return card


if __name__ == "__main__":
    main()

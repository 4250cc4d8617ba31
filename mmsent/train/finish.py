"""What a `mmsent train` run does once the loop is done: the report of best/ on the test split
(the validation split when there is no test split), the preset's evaluation steps, the model
card and the export.

    metrics = finish(cfg, run_dir, meta)

Evaluation steps are registered by name (`evals:` of a train preset). Each gets best/ and the
held-out posts and returns entries of the model card, which land in metrics.json (`evals`), in
best/config.json (`card`, with the preset's `card:` text, the split, the schedule, the history)
and, with `export_to`, in the exported checkpoint (best/'s weights, the model config, the card):

A step added after a model was built runs on its checkpoint alone, its entries merged into the
card (the shipped model's held-out posts):

    python -m mmsent.train.finish int8 [--model DIR]

    vader   best/ against VADER on the same held-out posts, per source (mmsent.train.default_model)
    int8    best/'s ONNX int8 export against best/ in fp32 on the held-out posts, per source: label
            agreement and macro-F1 (the quality guard of docs/runtime.md)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..config import ConfigError, TrainRunCfg, to_dict
from ..models.checkpoint import DEFAULT_MODEL_DIR, load, save
from .default_model import int8_guard, vader_comparison
from .labelled import fetch_media
from .report import write_report
from .splits import read_split

# name -> step(model, posts) -> entries of the model card
EVALS = {"vader": vader_comparison, "int8": int8_guard}


def check_evals(cfg: TrainRunCfg) -> None:
    unknown = [e for e in cfg.evals if e not in EVALS]
    if unknown:  # said before training, not after
        raise ConfigError(f"evals {unknown}: unknown; known: {sorted(EVALS)}")


def finish(cfg: TrainRunCfg, run_dir: Path, meta: dict) -> dict:
    state = json.loads((run_dir / "history.json").read_text())
    split = "test" if meta["sizes"].get("test") else "val"
    posts = read_split(run_dir, split, cfg, meta)
    media = fetch_media(posts, cfg.fetch, cfg.model)
    model = load(run_dir / "best")
    data = {**meta["stats"], "sizes": meta["sizes"]}
    for name, counts in media.items():  # images, audio: statuses per split
        file = run_dir / "data" / f"{name}.json"
        data[name] = {**(json.loads(file.read_text()) if file.exists() else {}), split: counts}
    extra = {
        "evaluated_on": split,
        "best_epoch": state["best_epoch"],
        "stopped_early": state.get("stopped_early", False),
        "data": data,
    }
    metrics = write_report(
        run_dir, model, posts, state["history"], extra, cfg.train.eval_batch_size
    )
    t = metrics["test"]
    print(
        f"{split}: macro-F1 {t['macro_f1']:.4f}, accuracy {t['accuracy']:.4f} "
        f"(best epoch {state['best_epoch']}); report in {run_dir}",
        flush=True,
    )
    if cfg.evals or cfg.card or cfg.export_to:
        metrics["evals"] = card_and_export(cfg, run_dir, model, posts, state["history"])
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def card_and_export(cfg: TrainRunCfg, run_dir: Path, model, posts, history: list[dict]) -> dict:
    """Run the evaluation steps, write the card into best/, export; the steps' results."""
    evals = {name: EVALS[name](model, posts) for name in cfg.evals}
    card = model_card(cfg, history, evals)
    meta_file = run_dir / "best" / "config.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "card": card}, indent=2) + "\n")
    if cfg.export_to:
        export(model, card, cfg.export_to)
    return evals


def model_card(cfg: TrainRunCfg, history: list[dict], evals: dict[str, dict]) -> dict:
    d = cfg.data
    stratified = f"{d.group_column} and label" if d.group_column else "label"
    card = {
        **cfg.card,
        "split": {"fractions": d.split, "seed": d.split_seed, "stratified_by": stratified},
        "train_cfg": to_dict(cfg.train),
        "history": history,
    }
    for entries in evals.values():
        card.update(entries)
    # seconds of the training epochs, validation included (a resumed run counts every epoch)
    card["train_seconds"] = round(sum(h.get("seconds", 0) for h in history))
    return card


def export(model, card: dict, to: str) -> Path:
    """best/ as a shipped checkpoint: weights, model config, card; swapped in whole."""
    dest = DEFAULT_MODEL_DIR if to == "default" else Path(to)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(model, tmp, extra={"card": card})
    for f in tmp.iterdir():  # safetensors writes 0600: a shipped model is readable by every user
        f.chmod(0o644)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"exported best/ with its model card to {dest}", flush=True)
    return dest


def add_eval(model_dir: str | Path, step: str) -> dict:
    """Run one evaluation step on the default preset's held-out posts with the checkpoint at
    `model_dir`; its entries merged into that checkpoint's card."""
    from .default_model import splits

    entries = EVALS[step](load(model_dir, "cpu"), splits()[2])
    path = Path(model_dir) / "config.json"
    meta = json.loads(path.read_text())
    meta["card"].update(entries)
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Run one evaluation step on a checkpoint's card.")
    ap.add_argument("step", choices=sorted(EVALS))
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="checkpoint with a card")
    args = ap.parse_args(argv)
    print(json.dumps(add_eval(args.model, args.step), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

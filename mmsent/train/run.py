"""The config and the folder of a `mmsent train` run.

    cfg, stem = resolve("default", ["train.epochs=1"])   # a preset name or a YAML/JSON file
    run_dir = new_run_dir(cfg, stem)                     # <out_dir>/<name or stem-date-time>/

`model:` is a model preset name (mmsent/presets/models/) or a model config; with `init_from`, the
checkpoint's model config is the base and the file's `model:` section overrides it key by key.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config import TrainRunCfg, apply_overrides, from_dict, read_file, resolve_preset
from ..models.checkpoint import DEFAULT_MODEL_DIR, read_meta


def resolve(source: str, overrides: list[str]) -> tuple[TrainRunCfg, str]:
    """The typed config of a preset or file, and the name its run folders start with."""
    path = resolve_preset(source, "train")
    raw = read_file(path)
    if isinstance(raw.get("model"), str):
        raw["model"] = read_file(resolve_preset(raw["model"], "models"))
    raw = apply_overrides(raw, overrides)
    if raw.get("init_from"):
        init = DEFAULT_MODEL_DIR if raw["init_from"] == "default" else Path(raw["init_from"])
        raw["model"] = _merge(read_meta(init)["model"], raw.get("model") or {})
    return from_dict(TrainRunCfg, raw), Path(path).stem


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def new_run_dir(cfg: TrainRunCfg, stem: str) -> Path:
    if cfg.name:
        run = Path(cfg.out_dir) / cfg.name
        if run.exists() and any(run.iterdir()):
            raise SystemExit(
                f"run folder {run} exists: resume it with --resume {run}, or pick another name"
            )
        return run
    run = Path(cfg.out_dir) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    while run.exists():
        run = run.with_name(run.name + "-1")
    return run

"""Checkpoints: a directory holding `config.json` (the full ModelCfg plus metadata) and
`model.safetensors` (only the weights that differ from the towers' pretrained sources, which are
referenced by name or local path and loaded from there; nothing is ever downloaded).

    save(model, "runs/x/best", extra={"metrics": {...}})
    model = load("runs/x/best")              # or load() for the shipped default model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..config import ModelCfg, from_dict, to_dict

if TYPE_CHECKING:  # torch is imported where weights are handled: read_meta stays torch-free
    import torch

    from .model import MultimodalClassifier

FORMAT = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


class CheckpointError(RuntimeError):
    pass


def save(
    model: MultimodalClassifier, path: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.trained_state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    meta = {
        "format": FORMAT,
        "mmsent_version": __version__,
        "model": to_dict(model.cfg),
        **(extra or {}),
    }
    (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return path


def read_meta(path: str | Path | None = None) -> dict[str, Any]:
    path = Path(path) if path else DEFAULT_MODEL_DIR
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        hint = (
            " (rebuild it with `mmsent train --config default`)"
            if path == DEFAULT_MODEL_DIR
            else ""
        )
        raise CheckpointError(f"no checkpoint at {path}: config.json is missing{hint}")
    meta = json.loads(cfg_file.read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format')!r}, this mmsent reads {FORMAT}"
        )
    return meta


def load(
    path: str | Path | None = None, device: str | torch.device | None = None
) -> MultimodalClassifier:
    """Load a checkpoint (default: the shipped default model) in eval mode."""
    from safetensors.torch import load_file

    from .model import build_model

    path = Path(path) if path else DEFAULT_MODEL_DIR
    cfg = from_dict(ModelCfg, read_meta(path)["model"])
    model = build_model(cfg)
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    not_base = sorted(set(missing) - model.base_state_keys())
    if unexpected or not_base:
        raise CheckpointError(
            f"{path}: weights do not match the config: unexpected={unexpected[:5]} missing={not_base[:5]}"
        )
    # keys saved from a trained part stay "trained" so a re-save stores them again
    for m, tower in model.towers.items():
        tower.trained_keys |= {
            k[len(f"towers.{m}.") :] for k in state if k.startswith(f"towers.{m}.")
        }
    return model.to(device or pick_device()).eval()


def pick_device() -> torch.device:
    """The torch device from torch itself (never from Ray's resource view)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

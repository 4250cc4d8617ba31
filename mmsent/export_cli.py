"""`mmsent export CHECKPOINT OUT --format onnx [--quantize int8]`: the checkpoint as ONNX graphs
(mmsent.models.export) with a parity report against torch fp32, in OUT/onnx.json and printed.

    mmsent export default out/default-int8 --quantize int8
    mmsent score dump.jsonl out/scores --set model_dir=out/default-int8 --set runtime=onnx

The parity set is fixed: 256 bundled VADER texts (the default model's held-out split) alone, the
real photos installed with scikit-image/matplotlib/scikit-learn alone, and the two together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .config import ConfigError
from .models.checkpoint import DEFAULT_MODEL_DIR, CheckpointError, load

PARITY_TEXTS = 256


def parity_posts() -> dict[str, list[dict]]:
    from .sample_data import real_photos
    from .train.default_model import splits

    texts = [t for t in splits()[2].texts if t][:PARITY_TEXTS]
    photos = [data for _, data in real_photos()]
    return {
        "text": [{"text": t} for t in texts],
        "image": [{"image": p} for p in photos],
        "text+image": [{"text": t, "image": p} for t, p in zip(texts, photos, strict=False)],
    }


def parity(checkpoint: Path, export_dir: Path) -> dict:
    """Per subset of the parity set: label agreement and max |p - p_torch| of the export."""
    from .predictor import Predictor

    runtimes = {
        "torch": Predictor(checkpoint, device="cpu"),
        "onnx": Predictor(export_dir, runtime="onnx"),
    }
    report = {}
    for name, posts in parity_posts().items():
        if not posts:
            report[name] = {"n": 0, "note": "no photos installed"}
            continue
        probs = {}
        for rt, pred in runtimes.items():
            out = pred.predict(posts)
            probs[rt] = np.array([[o["scores"][k] for k in pred.cfg.labels] for o in out])
        agree = (probs["torch"].argmax(1) == probs["onnx"].argmax(1)).mean()
        report[name] = {
            "n": len(posts),
            "label_agreement": round(float(agree), 4),
            "max_abs_dp": round(float(np.abs(probs["torch"] - probs["onnx"]).max()), 5),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mmsent export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("checkpoint", help='checkpoint folder, or "default" for the shipped model')
    ap.add_argument("out", help="folder to write (replaced whole)")
    ap.add_argument("--format", default="onnx", choices=["onnx"])
    ap.add_argument("--quantize", default=None, choices=["int8"], help="int8 text encoder")
    ap.add_argument("--no-parity", action="store_true", help="skip the parity report")
    args = ap.parse_args(argv)
    from .models.export import MANIFEST, export_onnx

    checkpoint = DEFAULT_MODEL_DIR if args.checkpoint == "default" else Path(args.checkpoint)
    out = Path(args.out)
    try:
        model = load(checkpoint, "cpu")
    except (CheckpointError, ConfigError, FileNotFoundError) as e:
        print(f"mmsent export: {e}", file=sys.stderr)
        return 2
    precision = args.quantize or "fp32"
    print(f"exporting {checkpoint} as ONNX {precision} to {out} ...", file=sys.stderr, flush=True)
    manifest = export_onnx(model, out, precision, checkpoint)
    if not args.no_parity:
        manifest["parity"] = parity(checkpoint, out)
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    files = {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}
    print(json.dumps({"out": str(out), "files": files, "parity": manifest.get("parity")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

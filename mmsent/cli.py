"""`mmsent` command line. Thin: every subcommand is a `main(argv)` in its own module.

mmsent predict --text "I love this!" [--image PATH_OR_URL] [--model DIR] [--runtime onnx]
mmsent score INPUT OUTPUT [--config mmsent/presets/score/<name>.yaml]
mmsent serve [--config mmsent/presets/serve/<name>.yaml]
mmsent train --config mmsent/presets/train/<name>.yaml
mmsent evaluate MODEL_DIR DATA [--runtime onnx]
mmsent export CHECKPOINT OUT --format onnx [--quantize int8]
mmsent make-demo-data OUT [--modalities text,image,tabular,audio]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# subcommand -> module with main(argv); modules are imported only when their command runs
COMMANDS = {
    "predict": ("mmsent.cli", "score one post and print JSON"),
    "score": ("mmsent.pipeline.cli", "bulk-score a dump with Ray Data"),
    "serve": ("mmsent.serve.app", "serve the model over HTTP with Ray Serve"),
    "train": ("mmsent.train.trainer", "train a fused model"),
    "evaluate": ("mmsent.train.evaluate", "evaluation report of a checkpoint"),
    "export": ("mmsent.export_cli", "export a checkpoint as ONNX (int8), with a parity report"),
    "make-demo-data": ("mmsent.demo_data", "write a demo social-media dump"),
    "make-sample-dump": ("mmsent.pipeline.sample", "write the sample dump the README scores"),
}


def predict_main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsent predict", description="Score one post; prints JSON.")
    ap.add_argument("--text", default=None, help="the post's text")
    ap.add_argument("--image", default=None, help="image path, file://, http(s):// or s3:// URL")
    ap.add_argument("--audio", default=None, help="audio clip (WAV, FLAC, OGG, MP3): path or URL")
    ap.add_argument(
        "--tabular", default=None, help="tabular values as a JSON object: '{\"likes\": 12}'"
    )
    ap.add_argument(
        "--model", default=None, help="checkpoint directory (default: the shipped model)"
    )
    add_runtime_args(ap)
    args = ap.parse_args(argv)
    if all(getattr(args, k) is None for k in ("text", "image", "audio", "tabular")):
        ap.error("give at least one of --text, --image, --audio, --tabular")
    try:
        tabular = json.loads(args.tabular) if args.tabular is not None else None
    except json.JSONDecodeError as e:
        ap.error(f"--tabular: not JSON ({e})")
    if tabular is not None and not isinstance(tabular, dict):
        ap.error("--tabular: give a JSON object of column -> value")
    from . import codes
    from .config import ConfigError, FetchCfg
    from .io.fetch import fetch
    from .predictor import Predictor

    post = {"text": args.text, "tabular": tabular}
    for medium in ("image", "audio"):
        ref = getattr(args, medium)
        data, status, _ = fetch(ref, FetchCfg()) if ref else (None, None, None)
        status = codes.fetch_code(status, medium)
        post[medium], post[f"{medium}_status"] = data, None if data is not None else status
    try:
        predictor = Predictor(args.model, runtime=args.runtime, precision=args.precision)
    except ConfigError as e:
        print(f"mmsent predict: {e}", file=sys.stderr)
        return 2
    [result] = predictor.predict([post])
    print(json.dumps(result, indent=2))
    return 0 if result["label"] is not None else 1


def add_runtime_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--runtime", default="torch", choices=["torch", "onnx"], help="what runs it")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16", "int8"],
        help="auto: onnx int8 on a CPU, torch bf16/fp16 on CUDA (docs/runtime.md)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:16s} {help_}" for name, (_, help_) in COMMANDS.items())
        print(f"usage: mmsent COMMAND [ARGS]\n\ncommands:\n{lines}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = argv[0], argv[1:]
    if name == "predict":
        return predict_main(rest)
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

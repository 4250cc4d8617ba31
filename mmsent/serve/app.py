"""The Serve application: `build_app` (the import path of mmsent/presets/serve/*.yaml and of the RayService
manifest) and `mmsent serve`.

    mmsent serve [--config mmsent/presets/serve/default.yaml] [--model DIR] [--port 8000]
    serve run mmsent/presets/serve/default.yaml                   # the same config, Ray's own CLI
    serve deploy mmsent/presets/serve/default.yaml                # to a running cluster (dashboard API)
    serve run mmsent.serve.app:build_app model_dir=/models/x     # args straight to the builder

In Python (tests, bench): `serve.run(compose(ServeCfg(...), model_options={...}))`; the options are
those of a Serve config's `deployments:` entries (user_config, max_ongoing_requests, ...).
"""

# No `from __future__ import annotations` here: Serve reads build_app's annotation at run time to
# validate a config's `args` with AppArgs (a string annotation would skip the validation).

import argparse
import os
import sys
import tempfile
from typing import Any

import yaml
from pydantic import RootModel, ValidationError
from ray.serve import Application

from ..config import ConfigError, ServeBatchCfg, ServeCfg, read_file, resolve_preset

IMPORT_PATH = "mmsent.serve.app:build_app"
DEPLOYMENTS = ("SentimentAPI", "SentimentModel")


class AppArgs(RootModel[ServeCfg]):
    """`args` of the application: the fields of mmsent.config.ServeCfg; unknown keys are errors."""


def build_app(args: AppArgs) -> Application:
    return compose(args.root)


def compose(
    cfg: ServeCfg, model_options: dict | None = None, api_options: dict | None = None
) -> Application:
    """SentimentAPI (ingress) -> DeploymentHandle -> SentimentModel."""
    from .ingress import SentimentAPI
    from .model import SentimentModel

    model = SentimentModel.options(**(model_options or {})).bind(
        cfg.model_dir, cfg.runtime, cfg.precision
    )
    return SentimentAPI.options(**(api_options or {})).bind(model, cfg)


def load_serve_config(source: str, overrides: dict[str, Any] | None = None) -> dict:
    """A Serve config file (preset name or path), overridden and validated as `serve deploy` would
    and, for mmsent apps, with their args and the model's user_config checked too."""
    from ray.serve.schema import ServeDeploySchema

    data = read_file(resolve_preset(source, "serve"))
    over = overrides or {}
    data.setdefault("http_options", {}).update(
        {k: over[k] for k in ("host", "port") if over.get(k)}
    )
    apps = [a for a in data.get("applications") or [] if a.get("import_path") == IMPORT_PATH]
    if not apps:
        raise ConfigError(f"{source}: no application with import_path {IMPORT_PATH}")
    try:
        ServeDeploySchema.model_validate(data)
        for app in apps:
            if over.get("model_dir"):
                app.setdefault("args", {})["model_dir"] = over["model_dir"]
            AppArgs.model_validate(app.get("args") or {})
            for dep in app.get("deployments") or []:
                if dep.get("name") not in DEPLOYMENTS:
                    raise ConfigError(
                        f"unknown deployment {dep.get('name')!r}; known: {DEPLOYMENTS}"
                    )
                if dep.get("name") == "SentimentModel" and "user_config" in dep:
                    RootModel[ServeBatchCfg].model_validate(dep["user_config"])
    except ValidationError as e:
        raise ConfigError(f"{source}: {e}") from None
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmsent serve", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--config", default="default", help="mmsent/presets/serve/<name>.yaml or a path"
    )
    ap.add_argument("--model", default=None, help="checkpoint directory (args.model_dir)")
    ap.add_argument("--host", default=None, help="HTTP host (the config's; 0.0.0.0 to expose)")
    ap.add_argument("--port", type=int, default=None, help="HTTP port (the config's)")
    ap.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS or a new local one)")
    ap.add_argument("--non-blocking", action="store_true", help="return once submitted")
    ap.add_argument("--dry-run", action="store_true", help="validate and print the config only")
    args = ap.parse_args(argv)
    try:
        over = {"host": args.host, "port": args.port, "model_dir": args.model}
        config = load_serve_config(args.config, over)
    except ConfigError as e:
        print(f"mmsent serve: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(yaml.safe_dump(config, sort_keys=False))
        return 0
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1 only
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="mmsent-", delete=False) as f:
        yaml.safe_dump(config, f, sort_keys=False)
    from ray.serve.scripts import cli

    # exactly `serve run CONFIG`: same deploy path as `serve deploy`, so user_config edits
    # redeployed later reconfigure replicas in place
    cmd = ["run", f.name, *(["--address", args.address] if args.address else [])]
    cli.main([*cmd, *(["--non-blocking"] if args.non_blocking else [])], standalone_mode=False)
    return 0

"""The RayService's serveConfigV2 is generated, never edited: mmsent/presets/serve/default.yaml (the one
Serve config, also used by `mmsent serve` locally) + deploy/serve-overlay.k8s.yaml (what differs
on Kubernetes: listen address, GPUs, autoscaling, health checks).

    python deploy/render.py           # rewrite serveConfigV2 in deploy/ray-service.sentiment.yaml
    python deploy/render.py --check   # exit 1 with a diff if the manifest is stale or invalid

Overlay rules: mappings merge key by key; lists of mappings that have a `name` (applications,
deployments) merge item by item by name, and an overlay item whose name the base lacks is an error
(a renamed deployment must not silently lose its GPU); other values replace; null deletes the key.
The result is checked as Serve will check it (see serve_config_errors) before anything is written.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "mmsent" / "presets" / "serve" / "default.yaml"
OVERLAY = REPO / "deploy" / "serve-overlay.k8s.yaml"
MANIFEST = REPO / "deploy" / "ray-service.sentiment.yaml"
BLOCK = re.compile(r"^(?P<indent> *)serveConfigV2: \|\n(?P<body>(?:(?P=indent)  .*\n|\n)*)", re.M)


class RenderError(ValueError):
    pass


def merge(base, overlay, where: str = ""):
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for k, v in overlay.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base[k], v, f"{where}{k}.") if k in base else v
        return out
    if _named(base) and _named(overlay):
        out, index = list(base), {item["name"]: i for i, item in enumerate(base)}
        for item in overlay:
            if item["name"] not in index:
                raise RenderError(f"overlay {where}{item['name']}: not in the base config")
            i = index[item["name"]]
            out[i] = merge(base[i], item, f"{where}{item['name']}.")
        return out
    return overlay


def _named(value) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def render_config(base: Path = BASE, overlay: Path = OVERLAY) -> dict:
    if not base.exists():
        raise RenderError(f"{base} is missing: it is the source of serveConfigV2")
    return merge(yaml.safe_load(base.read_text()), yaml.safe_load(overlay.read_text()) or {})


def serve_config_errors(cfg: dict) -> list[str]:
    """What Serve would refuse when the RayService deploys `cfg`, found here instead."""
    from pydantic import BaseModel, ValidationError
    from ray._common.utils import import_attr

    # Ray-version-sensitive (private in Ray 2.60): Serve's own builder call and graph walk.
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary as call
    from ray.serve._private.build_app import build_app
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(cfg)
    except ValidationError as e:
        return [f"serve config: {e}"]
    errors = []
    for app in cfg["applications"]:
        name = app.get("name")
        # Serve ignores unknown keys here (forward compatibility): a typo would be silently lost.
        errors += [f"{name}: unknown key {k!r}" for k in set(app) - _fields(ServeApplicationSchema)]
        for d in app.get("deployments", []):
            unknown = set(d) - _fields(DeploymentSchema)
            errors += [f"{name}.{d['name']}: unknown key {k!r}" for k in unknown]
        builder = import_attr(app["import_path"])
        params = list(inspect.signature(builder).parameters.values())
        model = params[0].annotation if len(params) == 1 else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            # e.g. a string annotation (`from __future__ import annotations`): Serve then passes
            # the raw dict and validates nothing.
            errors.append(f"{name}: {app['import_path']} must take one pydantic-typed argument")
            continue
        try:
            built = build_app(call(builder, app.get("args", {})), name=name)
        except (ValidationError, TypeError, ValueError) as e:
            errors.append(f"{name}: args rejected by {model.__name__}: {e}")
            continue
        present = {dep.name for dep in built.deployments}
        errors += [
            f"{name}: deployment {d['name']!r} configured but the app has only {sorted(present)}"
            for d in app.get("deployments", [])
            if d["name"] not in present
        ]
    return errors


def _fields(model) -> set[str]:
    return set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}


def render_manifest(text: str, cfg: dict) -> str:
    match = BLOCK.search(text)
    if match is None:
        raise RenderError(f"{MANIFEST.name}: no `serveConfigV2: |` block")
    pad = match["indent"] + "  "
    body = yaml.safe_dump(cfg, sort_keys=False, width=100)
    block = "".join(pad + line if line.strip() else line for line in body.splitlines(True))
    old = match["body"]
    blank_after = "\n" * (len(old) - len(old.rstrip("\n")) - 1)  # blank lines after the block stay
    return text[: match.start("body")] + block + blank_after + text[match.end("body") :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 if stale or invalid")
    args = ap.parse_args(argv)
    cfg = render_config()
    errors = serve_config_errors(cfg)
    if errors:
        print("rendered serve config is invalid:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    old = MANIFEST.read_text()
    new = render_manifest(old, cfg)
    if args.check:
        diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm=""))
        print("\n".join(diff) or f"{MANIFEST.name} is up to date")
        return 1 if diff else 0
    MANIFEST.write_text(new)
    print(f"wrote serveConfigV2 of {MANIFEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Validate the manifests in deploy/ offline, as strictly as a Kubernetes API server would.

    python deploy/validate.py                      # every manifest in deploy/; exit 1 on any error
    python deploy/validate.py deploy/ray-job.bulk-score.yaml

- ray.io/v1 resources: against the openAPIV3Schema of KubeRay's CRDs (deploy/crds/, copies of
  KubeRay's, pinned: see deploy/crds/README.md), their `metadata` against Kubernetes' ObjectMeta.
- Everything else (Secret, ConfigMap, Service, ...): against Kubernetes' own schemas
  (kubernetes-validate, bundled, offline), in their strict form.

Why "strict": KubeRay's CRDs are structural schemas without `x-kubernetes-preserve-unknown-fields`,
so the API server prunes fields it does not know, and with kubectl's default server-side field
validation (Strict, Kubernetes >= 1.27) it refuses them. A JSON Schema validator allows unknown
properties unless told otherwise, so a misspelled `minReplica` or `shutdownAfterJobFinish` would
pass. We therefore close every object schema that lists properties (additionalProperties: false)
unless it already says what extra keys may hold (maps such as `labels`, `resources.limits`).
List uniqueness (x-kubernetes-list-type map/set) is checked too; CEL rules
(x-kubernetes-validations) and int32/int64 ranges are not.
"""

from __future__ import annotations

import copy
import sys
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

REPO = Path(__file__).resolve().parent.parent
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CRD_DIR = REPO / "deploy" / "crds"  # KubeRay v1.7.0's CRDs, verbatim (crds/README.md)
K8S_VERSION = "1.33"  # the oldest Kubernetes minor these manifests are meant for
# every deploy/*.yaml is a manifest but the Serve overlay (input of deploy/render.py)
MANIFESTS = sorted(
    p for p in (REPO / "deploy").glob("*.yaml") if p.name != "serve-overlay.k8s.yaml"
)


def crd_dir() -> Path:
    """deploy/crds/: the repo's own pinned copies, never a folder outside the checkout."""
    if not (CRD_DIR / "ray.io_rayjobs.yaml").exists():
        raise FileNotFoundError(f"KubeRay CRDs not found: expected ray.io_*.yaml in {CRD_DIR}")
    return CRD_DIR


def close(schema):
    """A copy of `schema` whose objects reject unknown fields, as the API server does."""
    if isinstance(schema, list):
        return [close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    # under `properties`, the keys are field names: close their schemas, not the mapping itself
    out = {
        k: {p: close(s) for p, s in v.items()} if k == "properties" else close(v)
        for k, v in schema.items()
    }
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def _unique_list(validator, list_type, instance, schema):
    """x-kubernetes-list-type: `map` items are unique by their list-map-keys, `set` items unique."""
    if not isinstance(instance, list) or list_type not in ("map", "set"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen = [tuple(i.get(k) for k in keys) if list_type == "map" else i for i in instance]
    dups = [s for n, s in enumerate(seen) if s in seen[:n]]
    if dups:
        yield jsonschema.ValidationError(f"duplicate entries {dups} in a list-type={list_type}")


StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-list-type": _unique_list}
)


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    out = {}
    for f in sorted(crd_dir().glob("*.yaml")):
        crd = yaml.load(f.read_text(), Loader=SafeLoader)  # 1-2 MB each: the C loader
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            schema = close(v["schema"]["openAPIV3Schema"])
            out[(f"{group}/{v['name']}", kind)] = StrictValidator(schema)
    return out


@cache
def k8s_validator(name: str) -> jsonschema.protocols.Validator:
    """A strict validator for one Kubernetes type by its kubernetes-validate file name."""
    folder = f"kubernetes-json-schema/v{K8S_VERSION}.0-local-strict"
    schema = schema_contents(f"{folder}/{name}.json", K8S_VERSION)
    defs = Resource.from_contents(schema_contents(f"{folder}/_definitions.json", K8S_VERSION))
    registry = defs @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _errors(validator, doc, where: str, prefix: tuple = ()) -> list[str]:
    return [
        f"{where}: {'.'.join(map(str, prefix + tuple(e.absolute_path))) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def validate_doc(doc: dict, where: str = "") -> list[str]:
    """Error messages for one manifest document ([] when valid)."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return [f"{where}: not a Kubernetes object (no apiVersion/kind)"]
    key = (doc["apiVersion"], doc["kind"])
    where = f"{where}{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
    if key[0].startswith("ray.io/"):
        if key not in crd_validators():
            return [f"{where}: no KubeRay CRD for {key} in {crd_dir()}"]
        meta_validator = k8s_validator("objectmeta-meta-v1")
        meta = _errors(meta_validator, doc.get("metadata", {}), where, ("metadata",))
        return meta + _errors(crd_validators()[key], doc, where)
    try:
        kubernetes_validate.validate(copy.deepcopy(doc), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: {e.message}"]
    return []


def validate_file(path: str | Path) -> list[str]:
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    if not docs:
        return [f"{path}: no documents"]
    return [e for i, d in enumerate(docs) for e in validate_doc(d, f"{Path(path).name}[{i}] ")]


def main(argv: list[str] | None = None) -> int:
    files = (sys.argv[1:] if argv is None else argv) or MANIFESTS
    errors = [e for f in files for e in validate_file(f)]
    for f in files:
        print(f"{'FAIL' if any(e.startswith(Path(f).name) for e in errors) else 'ok  '} {f}")
    print("\n".join(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

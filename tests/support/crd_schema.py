"""Published CRD schemas, vendored, as JSON Schemas the manifest tests validate against.

CI reaches package registries only, so the custom resources' schemas live in `k8s/crds/`: each
file holds one served version's `openAPIV3Schema` from the CRD a project publishes, with its
source URL and release, descriptions left out (they are most of a CRD's bytes). Regenerate one
from a downloaded CRD with

    .venv/bin/python -m tests.support.crd_schema CRD.yaml VERSION SOURCE_URL > k8s/crds/NAME.json

`strict_json_schema` turns it into what `jsonschema` checks, as strictly as
`kubectl apply --validate=strict`: an unknown field is an error, not silently pruned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = Path(__file__).resolve().parents[2] / "k8s" / "crds"


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"
                or not isinstance(v, str)}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


def extract(crd_path: Path, version: str, release: str, source: str) -> dict:
    crd = yaml.safe_load(crd_path.read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return {"group": crd["spec"]["group"], "kind": crd["spec"]["names"]["kind"],
            "version": version, "release": release, "source": source,
            "openAPIV3Schema": _without_descriptions(served["schema"]["openAPIV3Schema"])}


def strict_json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema, unknown fields refused."""
    if isinstance(node, list):
        return [strict_json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_json_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def load(name: str) -> dict:
    """A vendored schema file of k8s/crds/ (its metadata and openAPIV3Schema)."""
    return json.loads((CRDS / name).read_text())


if __name__ == "__main__":
    crd, release, source = sys.argv[1:4]
    version = sys.argv[4] if len(sys.argv) > 4 else "v1"
    json.dump(extract(Path(crd), version, release, source), sys.stdout, indent=1)
    sys.stdout.write("\n")

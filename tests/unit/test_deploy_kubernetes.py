"""Kubernetes manifests: schema-valid offline, and consistent with the settings, probes and metrics port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pipeline.config import resolve_settings

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
# Kubernetes releases the manifests are checked against: the oldest one whose
# features they use (PodDisruptionBudget policy/v1, seccompProfile) still
# supported upstream, and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
HEX = "ab" * 32
# Where `make tools` installs the KEDA models package (npm @kubernetes-models/keda).
NODE_PREFIX = Path(sys.executable).parent.parent / "node"


def documents() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                found.append((path, document))
    return found


def find(kind: str) -> dict:
    (document,) = [document for _, document in documents() if document["kind"] == kind]
    return document


def worker_container() -> dict:
    (container,) = find("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_kinds_valid(version: str) -> None:
    checked = []
    for path, document in documents():
        if document["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(document, version, strict=True)
        checked.append(document["kind"])
    assert sorted(checked) == sorted(
        ["Namespace", "ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"]
    )


def test_scaledobject_valid_against_keda_models() -> None:
    node = shutil.which("node")
    if node is None or not (NODE_PREFIX / "node_modules" / "@kubernetes-models" / "keda").exists():
        pytest.fail("node or @kubernetes-models/keda is missing; run `make tools` (the `test` targets run it)")
    script = """
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { readFileSync } from "node:fs";
const document = JSON.parse(readFileSync(0, "utf8"));
new ScaledObject(document).validate();
console.log("valid");
"""
    document = find("ScaledObject")
    result = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        cwd=NODE_PREFIX,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "valid"


def test_keda_validator_rejects_bad_type() -> None:
    """The KEDA check can fail: a string replica count is rejected."""
    node = shutil.which("node")
    if node is None or not (NODE_PREFIX / "node_modules" / "@kubernetes-models" / "keda").exists():
        pytest.fail("node or @kubernetes-models/keda is missing; run `make tools` (the `test` targets run it)")
    document = find("ScaledObject")
    document["spec"]["minReplicaCount"] = "one"
    script = """
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { readFileSync } from "node:fs";
new ScaledObject(JSON.parse(readFileSync(0, "utf8"))).validate();
"""
    result = subprocess.run(
        [node, "--input-type=module", "-e", script], input=json.dumps(document), capture_output=True, text=True, cwd=NODE_PREFIX, check=False
    )
    assert result.returncode != 0
    assert "minReplicaCount must be integer" in result.stderr


def test_kustomization_builds_every_manifest() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing; it builds the kustomization (kubectl kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    built = sorted((doc["kind"], doc["metadata"]["name"]) for doc in yaml.safe_load_all(result.stdout))
    expected = sorted((doc["kind"], doc["metadata"]["name"]) for _, doc in documents())
    assert built == expected


def test_probes_use_health_endpoints() -> None:
    container = worker_container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    (port,) = container["ports"]
    assert port["name"] == container["readinessProbe"]["httpGet"]["port"] == "metrics"


def test_configmap_settings_valid(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ConfigMap's config.yaml plus the Secret's variables pass `tokensentry config check`."""
    for name in list(os.environ):
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.delenv(name)
    config = tmp_path / "config.yaml"
    config.write_text(find("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    env = {item["name"]: item.get("value") for item in worker_container()["env"]}
    monkeypatch.setenv("TOKENSENTRY_HASH_SECRET", HEX)
    monkeypatch.setenv("TOKENSENTRY_SIGNING_KEY", HEX)
    monkeypatch.setenv("TOKENSENTRY_SIGNING_KEY_ID", "k8s-1")
    monkeypatch.setenv("TOKENSENTRY_STORE", env["TOKENSENTRY_STORE"].replace("$(CLICKHOUSE_PASSWORD)", "pw"))
    resolved = resolve_settings(config, data_dir=Path(env["TOKENSENTRY_DATA_DIR"]))
    settings = resolved.settings
    assert settings.metrics.host == "0.0.0.0"
    assert settings.metrics.port == worker_container()["ports"][0]["containerPort"]
    assert settings.log_format == "json"

    scaled = find("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.kafka.group_id
    assert trigger["metadata"]["topic"] in settings.kafka.topics
    assert trigger["metadata"]["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert scaled["spec"]["maxReplicaCount"] <= settings.kafka.partitions


def test_secret_keys_referenced() -> None:
    secret_keys = set(find("Secret")["stringData"])
    referenced = {
        item["valueFrom"]["secretKeyRef"]["key"] for item in worker_container()["env"] if "valueFrom" in item
    }
    assert referenced == secret_keys


def test_store_url_expands_password_variable() -> None:
    names = [item["name"] for item in worker_container()["env"]]
    assert names.index("CLICKHOUSE_PASSWORD") < names.index("TOKENSENTRY_STORE"), (
        "$(CLICKHOUSE_PASSWORD) expands only from variables defined before it"
    )


def test_worker_hardened() -> None:
    pod = find("Deployment")["spec"]["template"]["spec"]
    container = worker_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] >= 60


def test_scrape_annotations_match_port() -> None:
    annotations = find("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(worker_container()["ports"][0]["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"

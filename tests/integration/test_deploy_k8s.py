"""deploy/k8s: every manifest validates against the Kubernetes API schemas (kubernetes-validate,
from PyPI, schemas bundled offline), and the custom resources (KEDA, RabbitMQ Cluster Operator)
carry the fields their operators need."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from skynet.common.topology import actions_queue
from tests.fixtures.common import require

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# Kinds that the Kubernetes API schemas do not cover: their operators' CRDs.
CUSTOM = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
}


def _docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in MANIFESTS:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_every_builtin_manifest_validates_against_the_kubernetes_schemas() -> None:
    validator = shutil.which("kubernetes-validate")
    require(validator is not None, "kubernetes-validate (pip install kubernetes-validate)")
    assert validator is not None
    result = subprocess.run([validator, "--strict", *map(str, MANIFESTS)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = result.stdout.count(" passed ")
    builtin = [d for d in _docs() if (d["apiVersion"], d["kind"]) not in CUSTOM]
    assert passed == len(builtin), result.stdout
    unknown = [line for line in result.stdout.splitlines() if "Couldn't find schema" in line]
    assert all(any(kind in line for _, kind in CUSTOM) for line in unknown), unknown


def test_the_custom_resources_are_the_operators_kinds_and_nothing_else() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in _docs()}
    assert kinds >= CUSTOM


def test_uploaders_scale_with_keda_on_the_depth_of_their_actions_queue() -> None:
    scaled = _one("ScaledObject")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    deployment = _one("Deployment", target["name"])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["name"] == "uploader"
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    config = _one("ConfigMap", "skynet-config")["data"]
    assert trigger["metadata"]["queueName"] == actions_queue(config["SKYNET_SOURCE"])
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert int(trigger["metadata"]["value"]) > 0
    auth = _one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secret = _one("Secret", ref["name"])
    assert ref["key"] in secret["stringData"]


def test_the_broker_is_a_rabbitmq_cluster_with_the_consumer_timeout_raised() -> None:
    cluster = _one("RabbitmqCluster")["spec"]
    assert cluster["replicas"] >= 3 and cluster["replicas"] % 2 == 1, "quorum queues need an odd majority"
    config = cluster["rabbitmq"]["additionalConfig"]
    compose_conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    for line in compose_conf.splitlines():
        if line.strip() and not line.startswith("#"):
            assert line.strip() in config, f"{line!r} of rabbitmq.conf is missing from the RabbitmqCluster"
    assert _one("ConfigMap", "skynet-config")["data"]["SKYNET_QUEUE_TYPE"] == "quorum"


def test_the_definitions_shipped_to_kubernetes_are_the_broker_definitions() -> None:
    shipped = json.loads((K8S / "rabbitmq-definitions.json").read_text())
    assert shipped == json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    examples = {"secret.example.yaml"}  # the real Secret is the operator's own
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS if p.name not in examples)


@pytest.mark.parametrize("name", ["skynet-watcher", "skynet-uploader", "skynet-notifier", "skynet-api"])
def test_each_service_runs_unprivileged_on_a_read_only_root(name: str) -> None:
    pod = _one("Deployment", name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    data = [m for m in container.get("volumeMounts", []) if m["name"] == "data"]
    assert all(m.get("readOnly") for m in data), "the watched folder is mounted read-only"


def test_there_is_exactly_one_watcher_and_it_is_never_doubled_during_a_rollout() -> None:
    watcher = _one("Deployment", "skynet-watcher")["spec"]
    assert watcher["replicas"] == 1
    assert watcher["strategy"]["type"] == "Recreate"

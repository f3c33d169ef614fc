"""deploy/kubernetes/ validates against a pinned Kubernetes and agrees with chatms's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from chatms.config import load_settings

KUBERNETES_VERSION = "1.34.0"  # also pinned in .ci/run
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def resources() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in resources() if r["kind"] == kind]


def _name(resource: dict[str, Any]) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


@pytest.mark.parametrize("resource", resources(), ids=_name)
def test_each_manifest_validates_strictly(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_deployment_drains_before_it_is_killed() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    server = load_settings({"DATABASE_URL": "postgresql://x@y/z", **env}).server
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    # After its grace period chatms waits a while more for the last stores.
    assert pod["terminationGracePeriodSeconds"] > (
        pre_stop + server.shutdown_grace_seconds + server.store_grace_seconds)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_grpc_has_a_headless_service_for_client_side_balancing() -> None:
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind("Service")}
    assert services["chatms-grpc"]["clusterIP"] == "None"
    assert {p["port"] for p in services["chatms-grpc"]["ports"]} == {50051}
    assert {p["port"] for p in services["chatms-http"]["ports"]} == {8080}
    assert by_kind("PodDisruptionBudget") and by_kind("HorizontalPodAutoscaler")

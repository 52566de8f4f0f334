"""Two cluster runs: the Lease that serializes moving the champion and changing the InferenceService.

The kubernetes client's own models and request code, with the HTTP answers recorded
(tests/support.py); the registry is the real sqlite one. The Lease rules followed are the API
server's: a create of an existing name and a replace with a stale ``resourceVersion`` answer 409.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import RecordedTransport, client_with
from test_inference_service import NAMESPACE, PATH, kubeconfig, ready_status, stored

from bertops.errors import BertopsError
from bertops.lease import lease_lock, lease_name
from bertops.registry import CHAMPION_ALIAS, open_client, set_champion
from components.register.register import Submission, register_model

NAME = "bbc-news-classifier"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases"
LEASE = f"{LEASES}/{lease_name(NAME)}"
NOT_FOUND = (404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
CONFLICT = (409, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409})


def lease(holder: str | None, renewed: datetime, version: str, seconds: int = 1500) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": seconds, "leaseTransitions": 1}
    if holder:
        stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec |= {"holderIdentity": holder, "acquireTime": stamp, "renewTime": stamp}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease_name(NAME), "namespace": NAMESPACE, "resourceVersion": version},
        "spec": spec,
    }


def locked(transport: RecordedTransport, timeout: float = 5) -> Any:
    return lease_lock(client_with(transport), NAMESPACE, lease_name(NAME), "deploy run-b", 1500, timeout, 0)


def test_a_free_lease_is_created_held_and_released() -> None:
    now = datetime.now(UTC)
    transport = RecordedTransport(
        {"GET": [NOT_FOUND], "POST": [(201, lease("deploy run-b", now, "7"))], "PUT": [(200, lease(None, now, "8"))]}
    )
    with locked(transport):
        assert transport.calls() == [("GET", LEASE), ("POST", LEASES)]
    assert transport.calls()[-1] == ("PUT", LEASE)
    created, released = transport.requests[1].body, transport.requests[2].body
    assert created["spec"]["holderIdentity"].startswith("deploy run-b (")
    assert created["spec"]["leaseDurationSeconds"] == 1500
    # The release is a compare-and-set on what this holder wrote, and leaves no holder.
    assert released["metadata"]["resourceVersion"] == "7" and "holderIdentity" not in released["spec"]


def test_a_held_lease_is_waited_for_and_the_wait_fails_naming_the_holder(caplog: pytest.LogCaptureFixture) -> None:
    transport = RecordedTransport({"GET": [(200, lease("register run-a (pod-a pid 7)", datetime.now(UTC), "7"))]})
    held_by = r"waiting for Lease .*held by register run-a \(pod-a pid 7\)"
    with pytest.raises(BertopsError, match=held_by), locked(transport, timeout=0):
        pytest.fail("took a Lease that another run holds")
    assert {method for method, _ in transport.calls()} == {"GET"}
    assert "waiting for another bertops run (register run-a (pod-a pid 7))" in caplog.text


def test_an_expired_lease_is_taken_over_with_the_version_read() -> None:
    """A holder that died (a killed pod) blocks the next run only until its Lease expires."""
    expired = lease("register run-a (pod-a pid 7)", datetime.now(UTC) - timedelta(seconds=1501), "7")
    now = datetime.now(UTC)
    transport = RecordedTransport(
        {"GET": [(200, expired)], "PUT": [(200, lease("deploy run-b", now, "8")), (200, lease(None, now, "9"))]}
    )
    with locked(transport):
        pass
    taken = transport.requests[1].body
    assert transport.calls()[1] == ("PUT", LEASE)
    assert taken["metadata"]["resourceVersion"] == "7" and taken["spec"]["holderIdentity"].startswith("deploy run-b")
    assert taken["spec"]["leaseTransitions"] == 2


def test_a_lost_race_reads_the_lease_again() -> None:
    """Two runs both saw the Lease expired; the API server let one replace it (409 for the other)."""
    before = datetime.now(UTC) - timedelta(seconds=1501)
    transport = RecordedTransport(
        {
            "GET": [(200, lease("run-a", before, "7")), (200, lease("register run-c", datetime.now(UTC), "8"))],
            "PUT": [CONFLICT],
        }
    )
    with pytest.raises(BertopsError, match=r"held by register run-c"), locked(transport, timeout=0.2):
        pytest.fail("took a Lease that another run won")
    assert [m for m, _ in transport.calls()].count("PUT") == 1


def test_register_on_a_cluster_refuses_a_stale_promotion_under_the_lease(trained_tiny: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    lineage = {"data_version": "md5:x", "git_commit": "c", "base_model": "tiny", "pipeline_run": "run-b"}
    submission = Submission(trained_tiny, NAME, {"test_accuracy": 0.9}, {}, lineage)
    client = open_client("", state)
    register_model(submission, True, state)
    register_model(submission, True, state)  # another run moved the champion to 2
    now = datetime.now(UTC)
    transport = RecordedTransport(
        {"GET": [NOT_FOUND], "POST": [(201, lease("x", now, "7"))], "PUT": [(200, lease(None, now, "8"))]}
    )
    result = register_model(submission, True, state, "", "1", locked(transport))
    assert (result.version, result.champion) == ("3", False)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION_ALIAS).version) == "2"
    assert transport.calls() == [("GET", LEASE), ("POST", LEASES), ("PUT", LEASE)]


STORAGE = "s3://mlflow/1/0a1b2c/artifacts/model"


def deploy_on_cluster(version: str, state: str) -> str:
    from components.deploy.component import deploy

    return str(
        deploy.python_func(
            model_name=NAME, version=version, state_dir=state, tracking_uri="", serve_port=0,
            deploy_target="cluster", namespace=NAMESPACE, canary_traffic_percent=-1, deployment_mode="Serverless",
            serving_gpus=0, serving_resources={}, pipeline_run="run-b", git_commit="c",
        )
    )  # fmt: skip


def test_cluster_deploy_applies_only_the_champion_and_only_under_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertops.k8s import to_manifest
    from components.deploy.inference_service import cluster_deploy_config, inference_service

    state = str(tmp_path / "state")
    client = open_client("", state)
    client.create_registered_model(NAME)
    for _ in range(2):
        client.create_model_version(NAME, source=STORAGE)
    set_champion(client, NAME, "2")
    now = datetime.now(UTC)
    manifest = to_manifest(inference_service(NAME, STORAGE, cluster_deploy_config(NAMESPACE, "Serverless", 0, {}, -1)))
    transport = RecordedTransport(
        {
            "GET": [NOT_FOUND, NOT_FOUND, (200, stored(manifest, 1, ready_status(1)))],
            "POST": [(201, lease("x", now, "7"))],
            "PATCH": [(201, stored(manifest, 1))],
            "PUT": [(200, lease(None, now, "8"))],
        }
    )
    kubeconfig(tmp_path, monkeypatch, transport)
    # Version 1 is no longer the champion: the Lease is taken and given back, nothing else changes.
    assert deploy_on_cluster("1", state) == ""
    assert transport.calls() == [("GET", LEASE), ("POST", LEASES), ("PUT", LEASE)]
    # The champion: the InferenceService changes between taking the Lease and giving it back.
    transport.requests.clear()
    transport.responses["GET"] = [NOT_FOUND, NOT_FOUND, (200, stored(manifest, 1, ready_status(1)))]
    deploy_on_cluster("2", state)
    calls = transport.calls()
    assert calls[:3] == [("GET", LEASE), ("POST", LEASES), ("GET", PATH)]
    assert ("PATCH", PATH) in calls and calls[-1] == ("PUT", LEASE)

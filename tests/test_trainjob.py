"""The cluster hand-off: TrainJob / PyTorchJob manifests, and submit-and-wait against the real client."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import k8s_tools
import pytest
from support import RecordedTransport, client_with

from bertops.errors import BertopsError
from components.deploy.inference_service import ClusterDeployConfig
from components.finetune.__main__ import parser
from components.finetune.config import LoopConfig
from components.finetune.job_spec import PYTORCHJOB, TrainJobConfig, check_launcher, job_manifest, job_name
from components.finetune.trainjob import job_namespace, submit, train_on_cluster, wait_finished

NAME = "ft-run-1"
FINETUNE = LoopConfig(batch_size=32, grad_accumulation=2, max_steps=600, checkpoint_every=100, patience=3)
PLACEMENT = ClusterDeployConfig()


def parsed_command(command: list[str]) -> tuple[dict[str, Any], LoopConfig]:
    """What ``python -m components.finetune`` makes of the job's torchrun command line."""
    assert command[:3] == ["torchrun", "--module", "components.finetune"]
    args = vars(parser().parse_args(command[3:]))
    paths = {"tokenized": args.pop("tokenized"), "out": args.pop("out")}
    return paths, LoopConfig(**args)


def pod_from(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def test_trainjob_runs_the_loop_on_gpu_nodes_with_the_shared_workspace() -> None:
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    config = TrainJobConfig(num_nodes=2, gpus_per_node=4)
    manifest = job_manifest(NAME, FINETUNE, config)
    # Round trip through the Trainer API models: a misspelled or misplaced field would be dropped.
    assert TrainerV1alpha1TrainJob.from_dict(copy.deepcopy(manifest)).to_dict() == manifest
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and manifest["kind"] == "TrainJob"
    assert manifest["metadata"] == {
        "name": NAME,
        "namespace": "bertops",
        "labels": {"app.kubernetes.io/part-of": "bertops"},
    }
    spec = manifest["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed"}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4
    assert trainer["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == "4"
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    paths, finetune = parsed_command(trainer["command"])
    assert paths == {"tokenized": Path(f"/workspace/{NAME}/tokenized"), "out": Path(f"/workspace/{NAME}/model")}
    # Pods given GPUs train on them or fail; "auto" would fall back to CPUs and gloo unnoticed.
    assert finetune == dataclasses.replace(FINETUNE, checkpoint_dir=f"/workspace/{NAME}/checkpoints", device="cuda")

    (patch,) = spec["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod_patch = replicated["template"]["spec"]["template"]["spec"]
    # One place for GPU placement: the serving defaults.
    assert pod_patch["nodeSelector"] == PLACEMENT.node_selector
    assert pod_patch["tolerations"] == PLACEMENT.tolerations
    assert {v["name"]: v for v in pod_patch["volumes"]}["workspace"]["persistentVolumeClaim"] == {
        "claimName": "bertops-workspace"
    }
    (container,) = pod_patch["containers"]
    assert container["name"] == "node"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/workspace", "/dev/shm"}

    # The pod the runtime would make from these parts is a valid Kubernetes pod.
    pod = pod_from(
        {
            "containers": [
                {
                    "name": "node",
                    "image": trainer["image"],
                    "command": trainer["command"],
                    "env": trainer["env"],
                    "resources": trainer["resourcesPerNode"],
                    "volumeMounts": container["volumeMounts"],
                }
            ],
            "volumes": pod_patch["volumes"],
            "nodeSelector": pod_patch["nodeSelector"],
            "tolerations": pod_patch["tolerations"],
        }
    )
    assert k8s_tools.schema_errors(pod, {}) == []


def test_pytorchjob_has_a_master_and_workers_with_a_valid_pod() -> None:
    config = TrainJobConfig(kind=PYTORCHJOB, num_nodes=3, gpus_per_node=2, node_selector={"pool": "a100"})
    manifest = job_manifest(NAME, FINETUNE, config)
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    spec = manifest["spec"]
    assert spec["nprocPerNode"] == "2"
    assert spec["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "None"}
    replicas = spec["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 2}
    for replica in replicas.values():
        assert replica["restartPolicy"] == "OnFailure"
        pod_spec = replica["template"]["spec"]
        (container,) = pod_spec["containers"]
        assert container["name"] == "pytorch"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert pod_spec["nodeSelector"] == {"pool": "a100"}
        assert pod_spec["tolerations"] == PLACEMENT.tolerations
        _, finetune = parsed_command(container["command"])
        assert finetune.max_steps == 600 and finetune.patience == 3 and finetune.device == "cuda"
        assert k8s_tools.schema_errors(pod_from(pod_spec), {}) == []


def test_single_node_pytorchjob_has_no_workers_and_cpu_only_asks_for_no_gpu() -> None:
    config = TrainJobConfig(kind=PYTORCHJOB, gpus_per_node=0, node_selector={}, tolerations=[])
    spec = job_manifest(NAME, FINETUNE, config)["spec"]
    assert list(spec["pytorchReplicaSpecs"]) == ["Master"]
    assert spec["nprocPerNode"] == "1"
    pod_spec = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod_spec["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod_spec and "tolerations" not in pod_spec
    _, finetune = parsed_command(pod_spec["containers"][0]["command"])
    assert finetune.device == "auto"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "MPIJob"}, "job kind must be TrainJob or PyTorchJob"),
        ({"num_nodes": 0}, "at least one node"),
        ({"workspace_pvc": ""}, "needs workspace_pvc"),
    ],
)
def test_bad_job_settings_fail_with_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(BertopsError, match=message):
        job_manifest(NAME, FINETUNE, TrainJobConfig(**overrides))


@pytest.mark.parametrize(
    ("launcher", "run_name", "pvc", "message"),
    [
        ("Slurm", "run", "ws", "launcher must be one of local, TrainJob, PyTorchJob, got 'Slurm'"),
        ("TrainJob", "", "ws", "launcher TrainJob needs run_name"),
        ("PyTorchJob", "run", "", "compile the pipeline with --workspace-pvc NAME"),
    ],
)
def test_the_finetune_step_refuses_a_launcher_it_cannot_start(
    launcher: str, run_name: str, pvc: str, message: str
) -> None:
    with pytest.raises(BertopsError, match=re.escape(message)):
        check_launcher(launcher, run_name, pvc)
    check_launcher("local", "", "")  # the local loop needs neither


def test_the_job_runs_in_the_pods_own_namespace_where_its_volume_is(tmp_path: Path) -> None:
    (tmp_path / "namespace").write_text("kubeflow-user\n")
    assert job_namespace("bertops", tmp_path / "namespace") == "kubeflow-user"
    assert job_namespace("bertops", tmp_path / "absent") == "bertops"  # not in a pod


def test_candidates_of_one_run_get_jobs_of_their_own() -> None:
    assert job_name("run-7/base") != job_name("run-7/higher-lr")


def test_job_names_are_dns_labels_stable_per_run() -> None:
    for run in ("bertops-text-classifier-20261122-131415", "Run_With Odd/Chars" * 5, "---"):
        name = job_name(run)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40
        assert job_name(run) == name
    assert job_name("run-a") != job_name("run-b")


# --- submit and wait, against the real client over a recorded transport ----------------------


def stored(manifest: dict[str, Any], conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    obj = copy.deepcopy(manifest)
    obj["metadata"].update(uid="2b0c7a4e-1f1e-4c55-9d1a-6f1f0e7b5a10", resourceVersion="1001", generation=1)
    if conditions is not None:
        obj["status"] = {"conditions": conditions}
    return obj


def condition(kind: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/bertops/trainjobs"
PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/bertops/pytorchjobs"


def test_submit_creates_the_job_and_waits_until_complete() -> None:
    manifest = job_manifest(NAME, FINETUNE, TrainJobConfig())
    running = stored(manifest, [condition("Created", reason="JobSetCreated")])
    transport = RecordedTransport(
        {"POST": [(201, stored(manifest))], "GET": [(200, running), (200, stored(manifest, [condition("Complete")]))]}
    )
    api = client_with(transport)
    submit(api, manifest)
    wait_finished(api, "TrainJob", "bertops", NAME, timeout=5, poll_interval=0)
    assert transport.calls() == [
        ("POST", TRAINJOBS),
        ("GET", f"{TRAINJOBS}/{NAME}"),
        ("GET", f"{TRAINJOBS}/{NAME}"),
    ]
    assert transport.requests[0].body == manifest


def test_a_retried_step_waits_for_the_job_it_submitted_before() -> None:
    manifest = job_manifest(NAME, FINETUNE, TrainJobConfig(kind=PYTORCHJOB))
    conflict = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409}
    transport = RecordedTransport({"POST": [(409, conflict)], "GET": [(200, stored(manifest, [condition("Running")]))]})
    submit(client_with(transport), manifest)
    assert [r.method for r in transport.requests] == ["POST", "GET"]


NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
CONFLICT = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409}


@pytest.mark.parametrize(("kind", "plural"), [("TrainJob", TRAINJOBS), (PYTORCHJOB, PYTORCHJOBS)])
def test_a_retried_step_replaces_a_job_that_failed(kind: str, plural: str) -> None:
    """A retry must not re-attach to the failed job of the first try (issue 11, finding 9).

    Both operators mark the end of a failed job with the condition type ``Failed`` (kubeflow/trainer
    pkg/apis/trainer/v1alpha1/trainjob_types.go ``TrainJobFailed``; kubeflow/training-operator
    v1.9.0 pkg/apis/kubeflow.org/v1/common_types.go ``JobFailed``), success with ``Complete`` /
    ``Succeeded`` (``TrainJobComplete``, ``JobSucceeded``).
    """
    manifest = job_manifest(NAME, FINETUNE, TrainJobConfig(kind=kind))
    failed = stored(manifest, [condition("Failed", reason="BackoffLimitExceeded", message="pod OOMKilled")])
    deleting = copy.deepcopy(failed)
    deleting["metadata"]["deletionTimestamp"] = "2026-11-22T10:05:00Z"
    transport = RecordedTransport(
        {
            "POST": [(409, CONFLICT), (201, stored(manifest))],
            "GET": [(200, failed), (200, deleting), (404, NOT_FOUND)],
            "DELETE": [(200, deleting)],
        }
    )
    submit(client_with(transport), manifest, poll_interval=0)
    item = f"{plural}/{NAME}"
    assert transport.calls() == [
        ("POST", plural),
        ("GET", item),
        ("DELETE", item),
        ("GET", item),
        ("GET", item),
        ("POST", plural),
    ]
    assert transport.requests[2].query == {"propagationPolicy": "Foreground"}
    assert transport.requests[-1].body == manifest


@pytest.mark.parametrize(("kind", "succeeded"), [("TrainJob", "Complete"), (PYTORCHJOB, "Succeeded")])
def test_a_retried_step_keeps_a_job_that_succeeded(kind: str, succeeded: str) -> None:
    manifest = job_manifest(NAME, FINETUNE, TrainJobConfig(kind=kind))
    done = stored(manifest, [condition(succeeded)])
    transport = RecordedTransport({"POST": [(409, CONFLICT)], "GET": [(200, done)]})
    api = client_with(transport)
    assert submit(api, manifest, poll_interval=0) == done
    assert wait_finished(api, kind, "bertops", NAME, timeout=5, poll_interval=0) == done
    assert [r.method for r in transport.requests] == ["POST", "GET", "GET"]


def test_a_failed_job_fails_the_step_with_the_operators_reason() -> None:
    manifest = job_manifest(NAME, FINETUNE, TrainJobConfig(kind=PYTORCHJOB))
    failed = stored(manifest, [condition("Failed", reason="BackoffLimitExceeded", message="pod OOMKilled")])
    transport = RecordedTransport({"GET": [(200, failed)]})
    with pytest.raises(BertopsError, match=r"PyTorchJob ft-run-1 failed \(BackoffLimitExceeded: pod OOMKilled\)"):
        wait_finished(client_with(transport), PYTORCHJOB, "bertops", NAME, timeout=5, poll_interval=0)


def test_train_on_cluster_hands_over_data_and_brings_the_model_back(
    trained_tiny: Path, tokenized_small: Path, tmp_path: Path
) -> None:
    config = TrainJobConfig(workspace_mount=str(tmp_path / "workspace"))
    (tmp_path / "workspace").mkdir()
    name = job_name("run-7")
    # What the job's rank 0 leaves on the shared volume when it completes.
    shutil.copytree(trained_tiny, tmp_path / "workspace" / name / "model")
    manifest = job_manifest(name, FINETUNE, config)
    transport = RecordedTransport(
        {"POST": [(201, stored(manifest))], "GET": [(200, stored(manifest, [condition("Complete")]))]}
    )
    out = tmp_path / "artifact"
    result = train_on_cluster(tokenized_small, out, FINETUNE, config, "run-7", client_with(transport), poll_interval=0)
    assert result.steps == 150
    assert (out / "model.safetensors").is_file()
    assert (tmp_path / "workspace" / name / "tokenized" / "train.parquet").is_file()
    assert transport.requests[0].body == manifest


def test_train_on_cluster_needs_the_workspace_mounted(tokenized_small: Path, tmp_path: Path) -> None:
    config = TrainJobConfig(workspace_mount=str(tmp_path / "not-mounted"))
    with pytest.raises(BertopsError, match="is not mounted"):
        train_on_cluster(tokenized_small, tmp_path / "out", FINETUNE, config, "run", client_with(RecordedTransport({})))

"""Deploy a registered model version as a KServe InferenceService on a Kubernetes cluster.

Server-side apply (field manager ``bertops``, conflicts forced) creates the object or updates
it in place. The step then waits until KServe's status shows the applied spec served: reported
by the child (Knative Service or Deployment) after the change, Ready, and in Knative mode the
newest revision ready and receiving the traffic, in Standard mode the Deployment rolled out.
If that does not happen in time, or KServe reports that the model cannot load, the spec read
before the change is applied again (or the new object deleted when there was none), and the
step fails with one line that says what happened and what was restored.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bertops.errors import BertopsError
from bertops.k8s import api_error, load_api_client, to_manifest, wait_until
from components.deploy.inference_service import (
    DEPLOYMENT_MODE_ANNOTATION,
    KNATIVE,
    LABEL_VALUE,
    MODEL_VERSION_LABEL,
    STORAGE_SCHEMES,
    ClusterDeployConfig,
    canonical_mode,
    check_webhook_rules,
    inference_service,
)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

FIELD_MANAGER = "bertops"
APPLY_PATCH = "application/apply-patch+yaml"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# KServe's model status when waiting longer cannot help.
FAILED_TRANSITIONS = ("InvalidSpec", "BlockedByFailedLoad")
# The reason of a Deployment's Progressing condition once its newest ReplicaSet is fully rolled out.
ROLLED_OUT = "NewReplicaSetAvailable"
# What an endpoint serves, for `kubectl get isvc -L bertops.io/model-version` and `kubectl describe`.
MODEL_NAME_LABEL = "bertops.io/model-name"
RUN_ANNOTATION = "bertops.io/pipeline-run"
COMMIT_ANNOTATION = "bertops.io/git-commit"
# Metadata that belongs to the server or to another client's apply, not to a spec to restore.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass
class ClusterEndpoint:
    """An InferenceService that KServe reported Ready."""

    name: str
    namespace: str
    url: str
    generation: int


class NotReadyError(Exception):
    """The applied InferenceService did not become Ready; the message says why."""


def get_inference_service(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The InferenceService as the API server holds it, or None when there is none."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return dict(CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise BertopsError(f"cannot read InferenceService {namespace}/{name}: {api_error(exc)}") from exc
    except HTTPError as exc:
        raise BertopsError(f"cannot read InferenceService {namespace}/{name}: {exc}") from exc


def apply_inference_service(api: ApiClient, manifest: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply ``manifest`` (create or update) and return the object the server stored."""
    from kubernetes.client.exceptions import ApiException

    meta = manifest["metadata"]
    try:
        # The same request as CustomObjectsApi.patch_namespaced_custom_object, whose generated
        # code (client < 31) can only send merge patches; apply needs its own content type.
        stored = api.call_api(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            "PATCH",
            path_params={
                "group": GROUP,
                "version": VERSION,
                "namespace": meta["namespace"],
                "plural": PLURAL,
                "name": meta["name"],
            },
            query_params=[("fieldManager", FIELD_MANAGER), ("force", True)],
            header_params={"Accept": "application/json", "Content-Type": APPLY_PATCH},
            body=manifest,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
    except ApiException as exc:
        raise BertopsError(
            f"InferenceService {meta['namespace']}/{meta['name']} was refused: {api_error(exc)}"
        ) from exc
    return dict(stored)


def delete_inference_service(api: ApiClient, namespace: str, name: str) -> None:
    """Delete the InferenceService (nothing to do when it is already gone)."""
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    try:
        CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status != 404:
            raise BertopsError(f"cannot delete InferenceService {namespace}/{name}: {api_error(exc)}") from exc


@dataclass(frozen=True)
class Rollout:
    """What KServe's status must show before the spec just applied counts as served.

    KServe copies ``status.observedGeneration`` from the InferenceService's child, the Knative
    Service (Knative mode) or the predictor's Deployment (Standard mode), not from the
    InferenceService's own generation (kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go,
    ``PropagateStatus`` and ``PropagateRawStatus``). A new spec changes the child, so the status
    speaks of it once the child's observed generation has passed the one reported before the apply.
    """

    # Knative or Standard (the KServe >= 0.16 names).
    mode: str
    # The child's generation in the status read before the apply; None when the apply changed no
    # spec (same generation), so there is nothing new to roll out.
    stale_child_generation: int | None


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _why(condition: dict[str, Any], default: str) -> str:
    return ": ".join(filter(None, (condition.get("reason"), condition.get("message")))) or default


def _not_ready_reason(current: dict[str, Any], rollout: Rollout) -> str:
    """Why ``current`` does not serve the applied spec yet ('' when it does); ``NotReadyError`` when waiting cannot help."""
    status = current.get("status") or {}
    observed = int(status.get("observedGeneration") or 0)
    if rollout.stale_child_generation is not None and observed <= rollout.stale_child_generation:
        # Everything in this status (Ready included) may describe the spec served before the apply.
        child = "Knative Service" if rollout.mode == KNATIVE else "Deployment"
        return f"KServe has not reported on the applied spec yet (its {child} is at generation {observed})"
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in FAILED_TRANSITIONS:
        failure = model.get("lastFailureInfo") or {}
        raise NotReadyError(
            f"cannot load the model ({failure.get('reason', model['transitionStatus'])}: {failure.get('message', '')})"
        )
    ready = _condition(status, "Ready")
    if ready.get("status") != "True":
        return _why(ready, "not Ready")
    predictor = (status.get("components") or {}).get("predictor") or {}
    if rollout.mode == KNATIVE:
        # KServe marks the model Loaded only when the latest created revision is the latest ready one
        # (PropagateModelStatus); traffic marked latestRevision must reach that revision.
        created, latest_ready = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
        if not created or created != latest_ready:
            return f"revision {created or '(none yet)'} is not ready (latest ready: {latest_ready or 'none'})"
        latest = [t for t in predictor.get("traffic") or [] if t.get("latestRevision")]
        if not latest or any(t.get("revisionName") != created for t in latest):
            return f"traffic does not reach revision {created} yet"
        return ""
    # Standard mode: PredictorReady is True while the old pods are Available, mid-rollout; KServe
    # copies the Deployment's Progressing reason NewReplicaSetAvailable only once the rollout is complete.
    predictor_ready = _condition(status, "PredictorReady")
    if predictor_ready.get("reason") != ROLLED_OUT:
        return f"the predictor's Deployment is rolling out ({_why(predictor_ready, 'no progress reported')})"
    return ""


def wait_ready(
    api: ApiClient, namespace: str, name: str, rollout: Rollout, timeout: float, poll_interval: float
) -> dict[str, Any]:
    """Poll until KServe reports the applied spec served; ``NotReadyError`` when it will not or did not in time."""

    def probe() -> tuple[dict[str, Any] | None, str]:
        try:
            current = get_inference_service(api, namespace, name)
        except BertopsError as exc:
            # A dropped connection or a busy API server: keep asking until the deadline.
            return None, str(exc)
        if current is None:
            raise NotReadyError("was deleted while waiting for it to become Ready")
        reason = _not_ready_reason(current, rollout)
        return (None if reason else current), reason

    return wait_until(
        probe, timeout, poll_interval, lambda reason: NotReadyError(f"was not Ready after {timeout:g}s ({reason})")
    )


def restorable(previous: dict[str, Any]) -> dict[str, Any]:
    """What to apply to bring back ``previous``: its spec, labels and annotations, nothing the server owns."""
    meta = previous["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    restored_meta: dict[str, Any] = {"name": meta["name"], "namespace": meta["namespace"]}
    if meta.get("labels"):
        restored_meta["labels"] = meta["labels"]
    if annotations:
        restored_meta["annotations"] = annotations
    return {
        "apiVersion": previous["apiVersion"],
        "kind": previous["kind"],
        "metadata": restored_meta,
        "spec": previous["spec"],
    }


def deploy_cluster(
    name: str,
    storage_uri: str,
    config: ClusterDeployConfig | None = None,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    api: ApiClient | None = None,
    timeout: float = 900.0,
    poll_interval: float = 5.0,
) -> ClusterEndpoint:
    """Create or update InferenceService ``name`` serving ``storage_uri``; roll back if it is not Ready in time."""
    config = config or ClusterDeployConfig()
    manifest = to_manifest(inference_service(name, storage_uri, config, labels, annotations))
    api = api or load_api_client()
    previous = get_inference_service(api, config.namespace, name)
    return apply_and_wait(api, manifest, previous, timeout, poll_interval)


def apply_and_wait(
    api: ApiClient, manifest: dict[str, Any], previous: dict[str, Any] | None, timeout: float, poll_interval: float
) -> ClusterEndpoint:
    """Apply ``manifest`` over ``previous`` (None: there is none), wait until it serves, else put ``previous`` back."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    mode = manifest["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION]
    previous_mode = ((previous or {}).get("status") or {}).get("deploymentMode")
    # KServe's webhook compares both names normalized (Serverless is Knative, RawDeployment is
    # Standard: KServe >= 0.16 rewrites the legacy names) and refuses a change; say so before any.
    if previous_mode and canonical_mode(previous_mode) != canonical_mode(mode):
        raise BertopsError(
            f"InferenceService {namespace}/{name} runs in {previous_mode} mode; it cannot change to {mode} "
            "(delete it first)"
        )
    applied = apply_inference_service(api, manifest)
    generation = int(applied["metadata"]["generation"])
    new_spec = previous is None or generation != int(previous["metadata"].get("generation") or 0)
    stale = int(((previous or {}).get("status") or {}).get("observedGeneration") or 0)
    rollout = Rollout(canonical_mode(mode), stale if new_spec else None)
    log.info("applied InferenceService %s/%s (generation %d); waiting for Ready", namespace, name, generation)
    try:
        ready = wait_ready(api, namespace, name, rollout, timeout, poll_interval)
    except NotReadyError as exc:
        if previous is None:
            delete_inference_service(api, namespace, name)
            outcome = "deleted it (there was none before)"
        else:
            apply_inference_service(api, restorable(previous))
            outcome = f"restored the previous spec (generation {previous['metadata'].get('generation', '?')})"
        raise BertopsError(f"InferenceService {namespace}/{name} {exc}; {outcome}") from exc
    url = str((ready.get("status") or {}).get("url", ""))
    log.info("InferenceService %s/%s is Ready at %s", namespace, name, url)
    return ClusterEndpoint(name=name, namespace=namespace, url=url, generation=generation)


def registered_storage_uri(model_name: str, version: str, state_dir: str = ".bertops", tracking_uri: str = "") -> str:
    """Where the registry keeps a version's model files, as a URI KServe's storage initializer can read."""
    from bertops.registry import open_client

    uri = str(open_client(tracking_uri, state_dir).get_model_version_download_uri(model_name, version))
    if not uri.startswith(STORAGE_SCHEMES):
        raise BertopsError(
            f"{model_name} version {version} is stored at {uri}, which KServe cannot download: run the MLflow "
            "server with an s3:// (or gs://) artifact root that it does not proxy (--no-serve-artifacts)"
        )
    return uri


def version_metadata(
    model_name: str, version: str, pipeline_run: str = "", git_commit: str = ""
) -> tuple[dict[str, str], dict[str, str]]:
    """The labels (model name, registry version) and annotations (run, commit) that say what an endpoint serves."""
    labels = {MODEL_NAME_LABEL: model_name, MODEL_VERSION_LABEL: str(version)}
    for key, value in labels.items():
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise BertopsError(
                f"{key}={value!r} is not a Kubernetes label value (at most 63 letters, digits, '-', '_', '.')"
            )
    annotations = {
        key: value for key, value in ((RUN_ANNOTATION, pipeline_run), (COMMIT_ANNOTATION, git_commit)) if value
    }
    return labels, annotations


def deploy_registered_version(
    model_name: str,
    version: str,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    config: ClusterDeployConfig | None = None,
    pipeline_run: str = "",
    git_commit: str = "",
    **kwargs: Any,
) -> ClusterEndpoint:
    """Serve a registered version on the cluster under the model's name, labelled with what it serves.

    Labels ``bertops.io/model-name`` and ``bertops.io/model-version`` (``kubectl get isvc -L
    bertops.io/model-version``), annotations ``bertops.io/pipeline-run`` and ``bertops.io/git-commit``.
    Applied with server-side apply as field manager ``bertops`` with conflicts forced: every field
    set here is taken back from whoever changed it last (a ``kubectl edit``, ``kubectl apply`` or
    ``helm upgrade`` of the same InferenceService), and fields that only they set are left alone;
    a later ``helm upgrade`` that sets these fields meets a conflict unless it forces them too.
    """
    storage_uri = registered_storage_uri(model_name, version, state_dir, tracking_uri)
    labels, annotations = version_metadata(model_name, version, pipeline_run, git_commit)
    return deploy_cluster(model_name, storage_uri, config, labels=labels, annotations=annotations, **kwargs)


def redeploy_registered_version(
    model_name: str,
    version: str,
    namespace: str,
    state_dir: str = ".bertops",
    tracking_uri: str = "",
    *,
    api: ApiClient | None = None,
    timeout: float = 900.0,
    poll_interval: float = 5.0,
) -> ClusterEndpoint:
    """Make the InferenceService ``model_name`` serve registered ``version`` with its live settings (a rollback).

    Only the model files and the version labels change; mode, resources and placement stay as they
    run. A canary split is dropped: the version goes live at once. Waits and restores like a deploy.
    """
    api = api or load_api_client()
    live = get_inference_service(api, namespace, model_name)
    if live is None:
        raise BertopsError(
            f"no InferenceService {namespace}/{model_name} to redeploy: deploy the model with deploy_target=cluster first"
        )
    manifest = copy.deepcopy(restorable(live))
    predictor = manifest["spec"]["predictor"]
    predictor["model"]["storageUri"] = registered_storage_uri(model_name, version, state_dir, tracking_uri)
    predictor.pop("canaryTrafficPercent", None)
    labels, _ = version_metadata(model_name, version)
    meta = manifest["metadata"]
    meta["labels"] = {**meta.get("labels", {}), **labels}
    # The run and commit of the version now served are not known here; drop those of the one replaced.
    meta["annotations"] = {
        key: value
        for key, value in meta.get("annotations", {}).items()
        if key not in (RUN_ANNOTATION, COMMIT_ANNOTATION)
    }
    meta["annotations"].setdefault(DEPLOYMENT_MODE_ANNOTATION, (live.get("status") or {}).get("deploymentMode", ""))
    check_webhook_rules(manifest)
    return apply_and_wait(api, manifest, live, timeout, poll_interval)

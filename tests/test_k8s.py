"""bertops.k8s: the Kubernetes helpers every cluster path shares."""

import pytest
from kubernetes.client import ApiException, V1ConfigMap, V1ObjectMeta

from bertops.k8s import api_error, to_manifest, wait_until


def test_api_error_reads_the_status_message_of_the_api_server() -> None:
    exc = ApiException(status=422, reason="Unprocessable Entity")
    exc.body = '{"kind": "Status", "message": "spec.predictor: Required value"}'
    assert api_error(exc) == "422 spec.predictor: Required value"
    bare = ApiException(status=503, reason="Service Unavailable")
    assert api_error(bare) == "503 Service Unavailable"


def test_to_manifest_leaves_out_unset_fields() -> None:
    manifest = to_manifest(V1ConfigMap(api_version="v1", kind="ConfigMap", metadata=V1ObjectMeta(name="x")))
    assert manifest == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}


def test_wait_until_returns_the_first_result_and_times_out_with_the_last_reason() -> None:
    answers = iter([(None, "pending"), (None, "creating"), ("ready", "")])
    assert wait_until(lambda: next(answers), timeout=5, poll_interval=0, on_timeout=RuntimeError) == "ready"
    with pytest.raises(TimeoutError, match="still starting"):
        wait_until(lambda: (None, "still starting"), timeout=0, poll_interval=0, on_timeout=TimeoutError)

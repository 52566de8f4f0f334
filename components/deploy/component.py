"""KFP component: deploy the registered version as an endpoint, locally or on the cluster."""

from kfp import dsl

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def deploy(
    model_name: str,
    version: str,
    state_dir: str,
    tracking_uri: str,
    serve_port: int,
    deploy_target: str,
    namespace: str,
    canary_traffic_percent: int,
) -> str:
    """Serve ``version`` and return the endpoint URL.

    ``local``: start (or replace) a KServe model server on 127.0.0.1. ``cluster``: apply the
    InferenceService with server-side apply, wait for Ready, roll back if it never gets there.
    """
    from bertops.errors import BertopsError
    from bertops.step import step

    with step("deploy"):
        if deploy_target == "local":
            from components.deploy.deploy import deploy_local

            return deploy_local(model_name, version, state_dir, tracking_uri, serve_port).url
        if deploy_target == "cluster":
            from components.deploy.deploy_cluster import deploy_registered_version
            from components.deploy.inference_service import ClusterDeployConfig

            canary = None if canary_traffic_percent < 0 else canary_traffic_percent
            config = ClusterDeployConfig(namespace=namespace, canary_traffic_percent=canary)
            return deploy_registered_version(model_name, version, state_dir, tracking_uri, config).url
        raise BertopsError(f"deploy_target must be 'local' or 'cluster', got {deploy_target!r}")

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
    deployment_mode: str,
    serving_gpus: int,
    serving_resources: dict,
    pipeline_run: str,
    git_commit: str,
    inference_log_rate: float = 1.0,
    inference_log_texts: bool = True,
    inference_logger_url: str = "",
) -> str:
    """Serve ``version`` and return the endpoint URL; "" when it is no longer the champion (checked
    under the model's lock with the switch itself: see ``bertops.champion_lock``). ``local``: start
    (or replace) a KServe server on 127.0.0.1 logging ``inference_log_rate`` of its texts (hashes and
    lengths only unless ``inference_log_texts``). ``docker``: nothing (steps get no container engine;
    ``bertops run`` starts the serving container after the run). ``cluster``: apply the
    InferenceService (``deployment_mode``, ``serving_gpus``, ``serving_resources``, KServe's logger to
    ``inference_logger_url`` if set; labels: version, run, commit), wait for Ready, else roll back."""
    from bertops.champion_lock import champion_lock
    from bertops.config import in_pod
    from bertops.errors import BertopsError
    from bertops.step import step
    from components.deploy.champion_deploy import deploy_if_champion

    with step("deploy"):
        what = f"deploy {model_name} v{version} for run {pipeline_run}"
        if deploy_target == "local":
            from components.deploy.deploy import deploy_local

            return deploy_if_champion(
                model_name, version, state_dir, tracking_uri, champion_lock(model_name, state_dir, what),
                lambda: deploy_local(model_name, version, state_dir, tracking_uri, serve_port,
                                     log_rate=inference_log_rate, log_texts=inference_log_texts).url,
            )  # fmt: skip
        if deploy_target == "docker":
            if in_pod():
                raise BertopsError(
                    "deploy_target=docker is served by `bertops run` after the run: set deploy_target=cluster"
                )
            return ""
        if deploy_target == "cluster":
            from components.deploy.deploy_cluster import deploy_registered_version
            from components.deploy.inference_service import cluster_deploy_config

            config = cluster_deploy_config(namespace, deployment_mode, serving_gpus, serving_resources,
                                           canary_traffic_percent, inference_logger_url)  # fmt: skip
            return deploy_if_champion(
                model_name, version, state_dir, tracking_uri, champion_lock(model_name, state_dir, what, "cluster", namespace),
                lambda: deploy_registered_version(
                    model_name, version, state_dir, tracking_uri, config, pipeline_run=pipeline_run, git_commit=git_commit
                ).url,
            )  # fmt: skip
        raise BertopsError(f"deploy_target must be 'local', 'docker' or 'cluster', got {deploy_target!r}")

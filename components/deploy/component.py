"""KFP component: deploy the registered version as an endpoint."""

from kfp import dsl

from bertops.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def deploy(model_name: str, version: str, state_dir: str, tracking_uri: str, serve_port: int) -> str:
    """Start (or replace) the local KServe endpoint for ``version``; returns its URL."""
    from bertops.step import step
    from components.deploy.deploy import deploy_local

    with step("deploy"):
        return deploy_local(model_name, version, state_dir, tracking_uri, serve_port).url

"""Serve a version only while it is the champion, checked under the model's lock.

The deploy step's half of the compare-and-set in ``bertops.champion_lock``: between this run's
register and its deploy, another run (or ``bertops models promote``) may have moved the
champion. Serving this version then would leave the endpoint on a version the registry no
longer calls champion, so the check and the whole switch (start the new server, save the
record, stop the old one; or apply the InferenceService and wait for it) run under one lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from bertops.champion_lock import champion_lock, not_champion
from bertops.registry import open_client

log = logging.getLogger(__name__)


def deploy_if_champion(
    model_name: str,
    version: str,
    state_dir: str,
    tracking_uri: str,
    lock: AbstractContextManager[None],
    deploy: Callable[[], str],
) -> str:
    """Under ``lock``, run ``deploy`` (returns the endpoint URL) if ``version`` is still the champion.

    Returns '' and changes nothing when it is not: whoever moved the champion deploys it.
    """
    with lock:
        reason = not_champion(open_client(tracking_uri, state_dir), model_name, version)
        if reason:
            log.warning("%s version %s not deployed: %s", model_name, version, reason)
            return ""
        return deploy()


def deploy_docker_champion(model_name: str, version: str, state_dir: str, tracking_uri: str) -> str:
    """``deploy_docker`` of ``version`` if it is still the champion, under the state directory's lock."""
    from components.deploy.deploy_docker import deploy_docker

    lock = champion_lock(model_name, state_dir, f"deploy {model_name} v{version} in a container")
    return deploy_if_champion(
        model_name,
        version,
        state_dir,
        tracking_uri,
        lock,
        lambda: deploy_docker(model_name, version, state_dir, tracking_uri).url,
    )

"""``bertops predict`` and ``bertops endpoints``: classify text with, list and delete local endpoints."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from bertops import config as cfg
from bertops.errors import BertopsError

if TYPE_CHECKING:
    from bertops.endpoints import Endpoint


def predict_v1(endpoint: Endpoint, text: str) -> tuple[str, dict[str, float]]:
    """The label and class probabilities ``endpoint`` gives ``text`` on its V1 predict route."""
    import requests

    try:
        response = requests.post(endpoint.v1_predict_url, json={"instances": [text]}, timeout=60)
    except requests.RequestException as exc:
        raise BertopsError(f"endpoint {endpoint.name!r} at {endpoint.url} does not answer: {exc}") from exc
    if response.status_code != 200:
        raise BertopsError(f"endpoint {endpoint.name!r} answered {response.status_code}: {response.text[:200]}")
    prediction = response.json()["predictions"][0]
    return prediction["label"], prediction["probabilities"]


def cmd_predict(args: argparse.Namespace) -> None:
    """Print each text's label and its probability as the endpoint answers."""
    from bertops import endpoints

    endpoint = endpoints.get(args.endpoint, args.state_dir)
    for text in args.text:
        label, probs = predict_v1(endpoint, text)
        print(f"{label}\t{probs[label]:.3f}\t{text[:80]}")


def cmd_endpoints(args: argparse.Namespace) -> None:
    """List the local endpoints (and whether they answer), or delete one by name."""
    from bertops import endpoints

    if args.action == "delete":
        if not args.name:
            raise BertopsError("endpoints delete needs the endpoint NAME (see `bertops endpoints list`)")
        gone = endpoints.delete(args.name, args.state_dir)
        print(f"deleted endpoint {gone.name} ({gone.url})")
        return
    found = endpoints.list_endpoints(args.state_dir)
    if not found:
        print("no local endpoints")
        return
    print(f"{'NAME':<28} {'VERSION':<8} {'READY':<6} URL")
    for e in found:
        print(f"{e.name:<28} {e.model_version:<8} {'yes' if e.is_ready() else 'no':<6} {e.url}")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], state: argparse.ArgumentParser) -> None:
    """``predict`` and ``endpoints``; ``state`` carries ``--state-dir``."""
    pred = sub.add_parser("predict", parents=[state], help="classify text with a local endpoint")
    pred.add_argument("text", nargs="+")
    pred.add_argument("--endpoint", default=cfg.RegistryConfig.model_name, help="endpoint name")
    pred.set_defaults(func=cmd_predict)

    ends = sub.add_parser("endpoints", parents=[state], help="list or delete local endpoints")
    ends.add_argument("action", choices=["list", "delete"])
    ends.add_argument("name", nargs="?")
    ends.set_defaults(func=cmd_endpoints)

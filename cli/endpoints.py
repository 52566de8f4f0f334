"""``bertops predict`` and ``bertops endpoints``: classify text with, list and delete local endpoints."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bertops import config as cfg
from bertops.errors import BertopsError
from cli.texts import Text, describe, read_texts

if TYPE_CHECKING:
    from bertops.endpoints import Endpoint


def predict_v1(endpoint: Endpoint, text: str) -> tuple[str, dict[str, float]]:
    """The label and class probabilities ``endpoint`` gives ``text`` on its V1 predict route."""
    prediction = predict_batch(endpoint, [text])[0]
    return prediction["label"], prediction["probabilities"]


def predict_batch(endpoint: Endpoint, texts: list[str], where: str = "") -> list[dict[str, Any]]:
    """``endpoint``'s predictions for ``texts``, in one V1 request; ``where`` names the texts in errors."""
    import requests

    try:
        response = requests.post(endpoint.v1_predict_url, json={"instances": texts}, timeout=60)
    except requests.RequestException as exc:
        raise BertopsError(f"endpoint {endpoint.name!r} at {endpoint.url} does not answer: {exc}") from exc
    if response.status_code != 200:
        about = f" for {where}" if where else ""
        raise BertopsError(f"endpoint {endpoint.name!r} answered {response.status_code}{about}: {response.text[:200]}")
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def _batches(texts: list[Text], size: int) -> Iterator[list[Text]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def cmd_predict(args: argparse.Namespace) -> None:
    """Classify the texts given, or those of ``--file``, in batches; print a table or JSON Lines."""
    from bertops import endpoints

    if args.batch_size < 1:
        raise BertopsError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.file and args.text:
        raise BertopsError("give texts or --file, not both")
    if args.file:
        texts = read_texts(Path(args.file), args.column)
    elif args.text:
        if args.column:
            raise BertopsError("--column names a column of a .jsonl or .csv --file")
        texts = [Text("", i, text) for i, text in enumerate(args.text, start=1)]
    else:
        raise BertopsError("nothing to classify: give one or more texts, or --file PATH")
    endpoint = endpoints.get(args.endpoint, args.state_dir)
    table = PredictionTable(sys.stdout, with_lines=bool(args.file))
    for batch in _batches(texts, args.batch_size):
        predictions = predict_batch(endpoint, [t.text for t in batch], describe(batch))
        for text, prediction in zip(batch, predictions, strict=True):
            if args.json:
                print(json.dumps(_json_line(text, prediction), ensure_ascii=False))
            else:
                table.row(text, prediction)


def _json_line(text: Text, prediction: dict[str, Any]) -> dict[str, Any]:
    label = prediction["label"]
    line = {"line": text.line} if text.source else {}
    return line | {
        "text": text.text,
        "label": label,
        "confidence": prediction["probabilities"][label],
        "probabilities": prediction["probabilities"],
    }


class PredictionTable:
    """Aligned columns (line, label, confidence, the text on one line, cut to the terminal's width),
    printed a row at a time: the label column is as wide as the endpoint's longest label."""

    def __init__(self, out: TextIO, with_lines: bool) -> None:
        self._out, self._with_lines = out, with_lines
        self._label_width = 0

    def row(self, text: Text, prediction: dict[str, Any]) -> None:
        label = prediction["label"]
        if not self._label_width:
            self._label_width = max(len("LABEL"), *(len(name) for name in prediction["probabilities"]))
            self._print("LINE", "LABEL", "CONFIDENCE", "TEXT")
        self._print(str(text.line), label, f"{prediction['probabilities'][label]:.3f}", text.text)

    def _print(self, line: str, label: str, confidence: str, text: str) -> None:
        head = (f"{line:>6}  " if self._with_lines else "") + f"{label:<{self._label_width}}  {confidence:>10}  "
        room = max(20, shutil.get_terminal_size((100, 24)).columns - len(head) - 1)
        flat = " ".join(text.split())
        self._out.write(head + (flat if len(flat) <= room else flat[: room - 3] + "...") + "\n")


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
    pred = sub.add_parser(
        "predict",
        parents=[state],
        help="classify texts with a local endpoint",
        description="Classify texts with a local endpoint: the texts given, or every text of --file, "
        "sent in batches. Prints the label and its probability per text, or JSON Lines with --json.",
    )
    pred.add_argument("text", nargs="*", help="texts to classify (or use --file)")
    pred.add_argument(
        "--file",
        default="",
        help="texts to classify: a text file (one text per line, blank lines skipped), or a .jsonl or .csv "
        "file with a column of texts (--column)",
    )
    pred.add_argument("--column", default="", help="the column of texts in a .jsonl or .csv --file (default: text)")
    pred.add_argument("--batch-size", type=int, default=32, help="texts per request (default: 32)")
    pred.add_argument(
        "--json", action="store_true", help="one JSON object per text: line, text, label, confidence, probabilities"
    )
    pred.add_argument("--endpoint", default=cfg.RegistryConfig.model_name, help="endpoint name")
    pred.set_defaults(func=cmd_predict)

    ends = sub.add_parser("endpoints", parents=[state], help="list or delete local endpoints")
    ends.add_argument("action", choices=["list", "delete"])
    ends.add_argument("name", nargs="?")
    ends.set_defaults(func=cmd_endpoints)

"""Start a KServe ModelServer for one fine-tuned model: ``python -m serving.server --model-dir DIR``.

Binds 127.0.0.1 by default. KServe 0.21's REST server hard-codes ``0.0.0.0``, so the class the
ModelServer instantiates is swapped for one that binds the host asked for.
"""

from __future__ import annotations

import argparse
import logging
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The server's own flags (KServe's are left to its defaults)."""
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__)
    parser.add_argument("--model-dir", required=True, help="save_pretrained directory of the model")
    parser.add_argument("--model-name", required=True, help="name in /v1/models/NAME and /v2/models/NAME")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 inside a pod)")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the model, then serve until SIGTERM/SIGINT."""
    args = parse_args(argv)
    # KServe parses sys.argv when imported; give it nothing of ours to misread.
    sys.argv = sys.argv[:1]
    from kserve import ModelServer
    from kserve import model_server as kserve_model_server
    from kserve.protocol.rest.server import RESTServer

    from serving.kserve_model import TextClassifierModel
    from serving.predictor import TextClassifierPredictor

    host = args.host

    class BoundRESTServer(RESTServer):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)
            self.config.host = host

    kserve_model_server.RESTServer = BoundRESTServer
    logging.basicConfig(level=logging.INFO)
    predictor = TextClassifierPredictor(args.model_dir, device=args.device)
    model = TextClassifierModel(args.model_name, predictor)
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()

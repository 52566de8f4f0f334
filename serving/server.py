"""Start a KServe ModelServer for one fine-tuned model: ``python -m serving.server --model-dir DIR``.

Binds 127.0.0.1 by default. KServe 0.21's REST server hard-codes ``0.0.0.0``, so the class the
ModelServer instantiates is swapped for one that serves the socket this module bound itself
(``serving.listener``: the host asked for, bound before the model loads and listening once it
is loaded, port 0 allowed and reported in ``--status-file``) and adds the server's own middleware (body limit, metrics,
access log; ``serving.http``). Every ``ServingConfig`` field is a flag (``--max-batch-size``,
``--backend`` ...; see ``--help``).

On SIGTERM the server stops accepting connections, lets in-flight and queued requests finish
(up to ``--grace-period-s``; those still running then answer 503), then exits. Headers, slow
clients and the queue are bounded (``serving.limits``).
"""

from __future__ import annotations

import argparse
import gc
import socket
import sys
from typing import Any

from bertops.env import configure_process
from bertops.inference_log import InferenceLogWriter
from serving import config as serving_config
from serving.config import ServingConfig
from serving.listener import WAITING, bind_early, bind_when_free, start_listening, write_status

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The server's flags; ``args.config`` is the validated ``ServingConfig`` (KServe's flags keep their defaults)."""
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="save_pretrained directory of the model")
    parser.add_argument("--model-name", required=True, help="name in /v1/models/NAME and /v2/models/NAME")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 inside a pod)")
    parser.add_argument("--http-port", type=int, default=8080, help="0: a free port the kernel picks")
    parser.add_argument(
        "--status-file", default="", help="JSON file where the server reports its pid, state and the port it bound"
    )
    parser.add_argument(
        "--port-wait-s",
        type=float,
        default=0.0,
        help="when the port is in use: load the model, then wait this long for it (a predecessor that is stopping)",
    )
    serving_config.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.config = serving_config.from_namespace(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.config.repository_api and args.host not in LOOPBACK_HOSTS:
        parser.error(f"--repository-api true needs --host on loopback ({', '.join(LOOPBACK_HOSTS)}), got {args.host}")
    return args


def rest_server_class(listener: socket.socket, config: ServingConfig) -> type:
    """KServe's ``RESTServer``, serving the already bound ``listener``, with the server's middleware on its app."""
    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer

    from serving import limits
    from serving.http import install

    class BertopsRESTServer(RESTServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # uvicorn resolves the protocol when it starts: httptools' parser with our bounds.
            self.config.http = limits.guarded_protocol(config)
            self.config.timeout_keep_alive = config.idle_timeout_s

        def create_application(self) -> None:
            super().create_application()
            # First, so that it runs inside the access log's middleware, which records its answers.
            limits.install(model_server.app)
            install(model_server.app, config.max_body_bytes, config.repository_api, config.model_version)

        async def start(self) -> None:
            # RESTServer.start without sockets would have uvicorn bind a socket of its own.
            self.create_application()
            await self._server.serve(sockets=[listener])

    return BertopsRESTServer


def inference_log_writer(config: ServingConfig) -> InferenceLogWriter | None:
    """The inference log's writer that ``--log-inference-dir`` asks for (None: no log), counted in the metrics."""
    if not config.log_inference_dir:
        return None
    from pathlib import Path

    from bertops.inference_log import LogSettings
    from serving import metrics

    settings = LogSettings(
        directory=Path(config.log_inference_dir),
        sample_rate=config.log_sample_rate,
        log_texts=config.log_texts,
        max_file_bytes=max(int(config.log_max_file_mb * 1024 * 1024), 1),
        max_files=config.log_max_files,
        queue_size=config.log_queue_size,
    )
    return InferenceLogWriter(
        settings,
        on_written=metrics.INFERENCE_LOG_WRITTEN.inc,
        on_drop=metrics.INFERENCE_LOG_DROPPED.inc,
        on_error=metrics.INFERENCE_LOG_ERRORS.inc,
    )


def main(argv: list[str] | None = None) -> None:
    """Load the model, then serve until SIGTERM/SIGINT."""
    args = parse_args(argv)
    config: ServingConfig = args.config
    # KServe parses sys.argv when imported; give it nothing of ours to misread.
    sys.argv = sys.argv[:1]
    from serving.logs import configure_logging

    configure_process()
    configure_logging(config.log_format)
    listener = bind_early(args.host, args.http_port, args.port_wait_s)

    from kserve import ModelServer
    from kserve import model_server as kserve_model_server

    from serving.http import StrictDataPlane, StrictRepositoryExtension
    from serving.kserve_model import TextClassifierModel
    from serving.predictor import TextClassifierPredictor

    model = TextClassifierModel(
        args.model_name, TextClassifierPredictor(args.model_dir, config), config, inference_log_writer(config)
    )
    # Ready only after a warm-up batch; KServe serves only models that are ready when it starts.
    model.load()
    if listener is None:
        write_status(args.status_file, WAITING)
        listener = bind_when_free(args.host, args.http_port, args.port_wait_s)
    start_listening(listener, args.host, args.status_file)
    kserve_model_server.RESTServer = rest_server_class(listener, config)
    server = ModelServer(
        http_port=args.http_port,
        enable_grpc=False,
        workers=1,
        grace_period=config.grace_period_s,
        # The access line of serving.http carries the latency; KServe's would double it.
        enable_latency_logging=False,
    )
    server.dataplane = StrictDataPlane(server.registered_models)
    server.model_repository_extension = StrictRepositoryExtension(server.registered_models)
    # The libraries loaded above leave ~340k objects that live as long as the process; a full
    # garbage collection walks them all with the GIL held (~190 ms measured here), stalling the
    # event loop, health checks included. Frozen, collections skip them (health max 16-30 ms
    # instead of 150-240 ms under 32 concurrent clients).
    gc.freeze()
    server.start([model])


if __name__ == "__main__":
    main()

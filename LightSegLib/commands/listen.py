"""``lightseg listen``: a DICOM storage node that segments the CT series a PACS sends and sends the results back."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import threading
from pathlib import Path

from ..errors import LightSegError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("listen", help="run as a DICOM node: receive CT series, send back DICOM SEG and SR")
    p.add_argument("--storage", type=Path, required=True, help="folder for the queue, received images and results")
    p.add_argument("--status", action="store_true", help="print the queue of --storage as a table and exit")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="DICOM port to listen on")
    p.add_argument("--ae-title", help="this node's AE title")
    p.add_argument("--allow", help="calling AE titles allowed to send, comma-separated")
    p.add_argument("--destination", metavar="AET@HOST:PORT", help="where results are sent by C-STORE")
    p.add_argument("--stable-seconds", type=float, default=10.0,
                   help="a series is complete when no instance arrived for this long (default 10)")
    p.add_argument("--delete-after-sending", action="store_true",
                   help="delete a series' received images once its results are sent")
    p.add_argument("--tls-cert", type=Path, help="TLS certificate (PEM): the node then accepts TLS associations only")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    p.add_argument("--model", help="model id or card path (default: the default model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..node.queue import SeriesQueue, status_table

    if args.status:
        if not (args.storage / "queue.sqlite").is_file():
            raise LightSegError("no node queue here (queue.sqlite)", args.storage)
        print(status_table(SeriesQueue(args.storage).rows()))
        return 0
    missing = [name for name in ("port", "ae_title", "allow", "destination") if getattr(args, name) is None]
    if missing:
        raise LightSegError("listen needs " + ", ".join("--" + name.replace("_", "-") for name in missing))
    from ..node.node import Node, NodeSettings
    from ..node.send import parse_destination

    try:
        destination = parse_destination(args.destination)
    except ValueError as error:
        raise LightSegError(str(error), "--destination") from None
    allowed = [title.strip() for title in args.allow.split(",") if title.strip()]
    if (args.tls_cert is None) != (args.tls_key is None):
        raise LightSegError("TLS needs both --tls-cert and --tls-key")
    tls = None
    if args.tls_cert is not None:
        for path in (args.tls_cert, args.tls_key):
            if not path.is_file():
                raise LightSegError("no such file", path)
        tls = (args.tls_cert, args.tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    node = Node(NodeSettings(args.storage, args.ae_title, allowed, destination, args.host, args.port,
                             args.stable_seconds, args.model, args.device, args.delete_after_sending, tls))
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        node.start()
    except ssl.SSLError as error:
        raise LightSegError(f"the TLS certificate or key cannot be used ({error.reason or error})",
                            args.tls_cert) from None
    except OSError as error:
        raise LightSegError(f"cannot listen on {args.host}:{args.port} ({error.strerror or error})") from None
    stopped.wait()
    node.stop()
    return 0

"""Series per minute through the DICOM node (receive, segment, send back) against `lightseg batch` on the same series.

    python benchmarks/bench_listen.py

P001 and normal001 (COVID-CT-MD, ../shared/data) are sent by C-STORE (pynetdicom, loopback) to a node running in this
process, which sends its DICOM Segmentation and report to a storage SCP standing in for the PACS. Timed from the
first C-STORE to the last result sent (the model already loaded, as in a running node). The receive rate is the
bytes of the files sent over the seconds the C-STOREs took. Then `lightseg batch --format dcm` over the same series
folders (one fresh process, model loading included, as a user runs it). cap002 cannot travel over DICOM at all: its
SOP Instance UIDs are empty (and its study and series UIDs are not DICOM UIDs), so no C-STORE request can carry it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib.node.node import Node, NodeSettings  # noqa: E402

CTS = REPO.parent / "shared" / "data" / "covid-ct-md"
SERIES = ("P001", "normal001")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def send(folder: Path, port: int) -> int:
    """C-STORE a series folder to the node; returns the bytes sent."""
    files = sorted(folder.iterdir())
    ae = AE(ae_title="PACS")
    syntax = pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID
    ae.add_requested_context(CTImageStorage, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIGHTSEG")
    assert assoc.is_established, "the node refused the association"
    for path in files:
        assoc.send_c_store(pydicom.dcmread(path))
    assoc.release()
    return sum(path.stat().st_size for path in files)


def main() -> None:
    received = []
    pacs = AE(ae_title="PACS")
    for context in AllStoragePresentationContexts:
        pacs.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    pacs_port = free_port()
    server = pacs.start_server(("127.0.0.1", pacs_port), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(1) or 0x0000)])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        node = Node(NodeSettings(tmp / "node", "LIGHTSEG", ["PACS"], ("PACS", "127.0.0.1", pacs_port),
                                 port=free_port(), stable_seconds=1.0, device="cpu"))
        node.start()
        start = time.perf_counter()
        sent_bytes, sending_seconds = 0, 0.0
        for name in SERIES:
            tic = time.perf_counter()
            sent_bytes += send(CTS / name, node.settings.port)
            sending_seconds += time.perf_counter() - tic
        node.wait_until_idle(900)
        node_seconds = time.perf_counter() - start
        node.stop()
        states = {row.series_uid[-12:]: row.state for row in node.queue.rows()}
        server.shutdown()

        tree = tmp / "tree"
        tree.mkdir()
        for name in SERIES:
            (tree / name).symlink_to(CTS / name)
        tic = time.perf_counter()
        batch = subprocess.run([sys.executable, "-m", "LightSegLib", "batch", str(tree), "-o", str(tmp / "out"),
                                "--format", "dcm", "--device", "cpu"], cwd=REPO, capture_output=True, text=True)
        batch_seconds = time.perf_counter() - tic
    print(f"{'path':<44} {'seconds':>8} {'series/min':>11}  outcome")
    print(f"{'lightseg listen (receive, segment, send)':<44} {node_seconds:8.1f} "
          f"{60 * len(SERIES) / node_seconds:11.2f}  {sorted(states.values())}, {len(received)} instances sent back")
    print(f"{'lightseg batch --format dcm (fresh process)':<44} {batch_seconds:8.1f} "
          f"{60 * len(SERIES) / batch_seconds:11.2f}  exit {batch.returncode}")
    print(f"\nreceive rate: {sent_bytes / 1e6:.1f} MB in {sending_seconds:.1f} s of C-STORE = "
          f"{sent_bytes / 1e6 / sending_seconds:.1f} MB/s (loopback, the node writing each file before answering)")


if __name__ == "__main__":
    main()

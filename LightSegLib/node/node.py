"""The node: the storage SCP in the background, and one worker that promotes stable series, segments them with the
same code as ``lightseg segment`` and sends the results, all through the persistent queue."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LightSegError
from .queue import FAILED, SENDING, SENT, SeriesQueue
from .receive import incoming_folder, safe_name, storage_ae, tls_context
from .send import SendError, send_files

LOG = logging.getLogger("lightseg.node")
POLL_SECONDS = 0.5


@dataclass
class NodeSettings:
    storage: Path
    ae_title: str
    allowed: list[str]
    destination: tuple[str, str, int]
    host: str = "127.0.0.1"
    port: int = 11112
    stable_seconds: float = 10.0
    model: str | None = None
    device: str = "auto"
    delete_after_sending: bool = False
    tls: tuple[Path, Path] | None = None  # certificate and key: the listening side speaks TLS only


def results_folder(storage: Path, series_uid: str) -> Path:
    return storage / "results" / safe_name(series_uid)


class Node:
    """``start()`` listens and works in background threads; ``stop()`` ends both (what is queued stays queued)."""

    def __init__(self, settings: NodeSettings) -> None:
        from ..pipeline import make_segmenter

        self.settings = settings
        self.queue = SeriesQueue(settings.storage)
        self.segmenter = make_segmenter(settings.model, settings.device)
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        recovered = self.queue.recover()
        if recovered:
            LOG.info("%d series interrupted while running will run again", recovered)
        ae, handlers = storage_ae(self.settings.ae_title, self.settings.allowed, self.settings.storage, self.queue)
        context = tls_context(*self.settings.tls) if self.settings.tls else None
        self._server = ae.start_server((self.settings.host, self.settings.port), block=False, evt_handlers=handlers,
                                       ssl_context=context)
        self._worker = threading.Thread(target=self._work, name="lightseg-node-worker", daemon=True)
        self._worker.start()
        LOG.info("listening as %s on %s:%d", self.settings.ae_title, self.settings.host, self.settings.port)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the node keeps serving; the series' row says what happened
                LOG.exception("worker step failed")
            self._stop.wait(POLL_SECONDS)

    def step(self) -> None:
        """Promote stable series, segment one waiting series, send what is due."""
        self.queue.promote_stable(self.settings.stable_seconds)
        row = self.queue.take_waiting()
        if row is not None:
            self._segment(row.series_uid)
        for row in self.queue.due_for_sending():
            self._send(row.series_uid)

    def _segment(self, series_uid: str) -> None:
        from ..pipeline import SegmentRequest, segment_file

        out = results_folder(self.settings.storage, series_uid)
        out.mkdir(parents=True, exist_ok=True)
        request = SegmentRequest(incoming_folder(self.settings.storage, series_uid), out / "segmentation.dcm",
                                 report=out / "report.json", report_sr=out / "measurements.dcm", force=True)
        LOG.info("segmenting series %s", series_uid)
        try:
            outcome = segment_file(request, segmenter=self.segmenter)
        except LightSegError as error:
            self.queue.set_state(series_uid, FAILED, str(error).replace(str(request.input), "series"))
            LOG.warning("series %s failed: %s", series_uid, error)
            return
        except Exception as error:  # noqa: BLE001 - one bad series is a failed row, never a stopped node
            self.queue.set_state(series_uid, FAILED, f"{type(error).__name__}: {error}".splitlines()[0])
            LOG.exception("series %s failed", series_uid)
            return
        if outcome.warnings:  # no lungs: an empty segmentation is no result
            self.queue.set_state(series_uid, FAILED, "no lungs found")
            return
        self.queue.set_state(series_uid, SENDING)

    def _send(self, series_uid: str) -> None:
        out = results_folder(self.settings.storage, series_uid)
        try:
            send_files([out / "segmentation.dcm", out / "measurements.dcm"], self.settings.ae_title,
                       self.settings.destination)
        except (SendError, OSError, RuntimeError) as error:
            self.queue.send_failed(series_uid, str(error))
            LOG.warning("sending series %s failed (will retry): %s", series_uid, error)
            return
        self.queue.set_state(series_uid, SENT)
        LOG.info("sent the results of series %s", series_uid)
        if self.settings.delete_after_sending:
            shutil.rmtree(incoming_folder(self.settings.storage, series_uid), ignore_errors=True)

    def wait_until_idle(self, timeout: float) -> bool:
        """True once no series is receiving, waiting, running or sending (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(row.state in (SENT, FAILED) for row in self.queue.rows()):
                return True
            time.sleep(0.2)
        return False

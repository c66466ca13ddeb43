"""The storage SCP: CT images by C-STORE from the allowed AE titles only, written atomically before success is sent."""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import tempfile
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import CTImageStorage, EnhancedCTImageStorage, Verification

from .queue import SeriesQueue

LOG = logging.getLogger("lightseg.node")
ACCEPTED_STORAGE = (CTImageStorage, EnhancedCTImageStorage)
_UID_CHARACTERS = set("0123456789.")


def safe_name(uid: str) -> str:
    """A UID as a file or folder name: itself when it is digits and dots, else a digest (a malformed UID must not
    become a path; the series then fails at segmentation, with its reason, instead of being refused here)."""
    if 0 < len(uid) <= 64 and set(uid) <= _UID_CHARACTERS and not uid.startswith("."):
        return uid
    return "uid-" + hashlib.sha256(uid.encode()).hexdigest()[:24]


def incoming_folder(storage: Path, series_uid: str) -> Path:
    return storage / "incoming" / safe_name(series_uid)


def tls_context(certificate: Path, key: Path) -> ssl.SSLContext:
    """The server side of TLS for sites that require it (TLS 1.2 or later)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    return context


def storage_ae(ae_title: str, allowed: list[str], storage: Path, queue: SeriesQueue) -> tuple[AE, list]:
    """An AE that accepts CT storage and verification from ``allowed`` calling AE titles, and its event handlers."""
    ae = AE(ae_title=ae_title)
    ae.require_calling_aet = allowed  # anyone else is rejected at association
    for sop_class in ACCEPTED_STORAGE:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)

    def on_store(event: evt.Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        series_uid, study_uid = str(dataset.get("SeriesInstanceUID", "")), str(dataset.get("StudyInstanceUID", ""))
        sop_uid = str(dataset.get("SOPInstanceUID", ""))
        if not series_uid or not sop_uid:
            LOG.warning("refused an instance without a series or instance UID")
            return 0xA900  # dataset does not match SOP class
        folder = incoming_folder(storage, series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{safe_name(sop_uid)}.dcm"
        is_new = not target.exists()
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".receiving-")
        try:
            with os.fdopen(handle, "wb") as stream:
                dataset.save_as(stream, enforce_file_format=True)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except Exception:  # noqa: BLE001 - a disk problem is a failed C-STORE, never a lost image
            Path(temporary).unlink(missing_ok=True)
            LOG.exception("could not store an instance of series %s", series_uid)
            return 0xA700  # out of resources
        if is_new:
            queue.instance_stored(series_uid, study_uid, event.assoc.requestor.ae_title)
        return 0x0000

    return ae, [(evt.EVT_C_STORE, on_store)]

"""The storage SCU: a series' results (DICOM Segmentation and measurement report) to the destination AE."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pynetdicom import AE


class SendError(Exception):
    """The destination could not be reached or did not accept an instance (one line)."""


def parse_destination(text: str) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` -> (AE title, host, port); ValueError if it is not that."""
    title, _, address = text.partition("@")
    host, _, port = address.rpartition(":")
    if not title or not host or not port.isdigit():
        raise ValueError(f"not AET@HOST:PORT: {text!r}")
    return title, host, int(port)


def send_files(paths: list[Path], calling_ae: str, destination: tuple[str, str, int]) -> None:
    """C-STORE each file in one association; raises SendError unless every one was stored."""
    datasets = [pydicom.dcmread(path) for path in paths]
    ae = AE(ae_title=calling_ae)
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    title, host, port = destination
    assoc = ae.associate(host, port, ae_title=title)
    if not assoc.is_established:
        raise SendError(f"no association with {title}@{host}:{port}")
    try:
        for dataset in datasets:
            status = assoc.send_c_store(dataset)
            if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                code = f"0x{status.Status:04X}" if status else "no answer"
                raise SendError(f"{title} refused {dataset.SOPClassUID.name} ({code})")
    finally:
        assoc.release()

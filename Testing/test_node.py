"""``lightseg listen``: CT series in by C-STORE, DICOM SEG and SR out, nothing lost or sent twice across a restart.

The PACS on both sides is a real DICOM peer on loopback ports (pynetdicom's storage SCU and SCP), not a mock."""

import io
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from conftest import P001_DICOM, run_cli
from LightSegLib.node.node import Node, NodeSettings
from LightSegLib.node.queue import FAILED, RECEIVING, SENT, SeriesQueue

NODE_AE, PACS_AE = "LIGHTSEG", "PACS"
SEG_CLASS, SR_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Destination:
    """A storage SCP standing in for the PACS's receiving side: it keeps every dataset it gets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[pydicom.Dataset] = []
        ae = AE(ae_title=PACS_AE)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)

        def on_store(event):
            self.received.append(event.dataset)
            return 0x0000

        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def close(self) -> None:
        self.server.shutdown()


def send_series(files: list[Path], port: int, calling_ae: str = PACS_AE) -> bool:
    """C-STORE files to the node as a PACS would; False when the association is rejected."""
    ae = AE(ae_title=calling_ae)
    for syntax in {pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID,
                   ExplicitVRLittleEndian}:
        ae.add_requested_context(CTImageStorage, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    if not assoc.is_established:
        return False
    for path in files:
        status = assoc.send_c_store(pydicom.dcmread(path))
        assert status and status.Status == 0x0000
    assoc.release()
    return True


@pytest.fixture
def destination():
    pacs = Destination()
    yield pacs
    pacs.close()


def make_node(storage: Path, destination: Destination, stable: float = 1.0) -> Node:
    return Node(NodeSettings(storage, NODE_AE, [PACS_AE], (PACS_AE, "127.0.0.1", destination.port),
                             port=free_port(), stable_seconds=stable, device="cpu"))


def through_a_node(series: Path, storage: Path, destination: Destination):
    """Send a series folder through a fresh node until it is done; the node's one queue row."""
    node = make_node(storage, destination)
    node.start()
    try:
        assert send_series(sorted(series.iterdir()), node.settings.port)
        assert node.wait_until_idle(120)
    finally:
        node.stop()
    [row] = node.queue.rows()
    return row


def test_a_series_comes_back_as_seg_and_sr_in_its_study_and_only_allowed_titles_may_send(tmp_path, destination):
    node = make_node(tmp_path / "node", destination)
    node.start()
    try:
        assert not send_series(sorted(P001_DICOM.iterdir())[:1], node.settings.port, calling_ae="STRANGER")
        assert send_series(sorted(P001_DICOM.iterdir()), node.settings.port)
        assert node.wait_until_idle(300)
    finally:
        node.stop()
    source = pydicom.dcmread(next(P001_DICOM.iterdir()), stop_before_pixels=True)
    [row] = node.queue.rows()
    assert row.state == SENT and row.instances == 148 and row.series_uid == source.SeriesInstanceUID
    assert sorted(ds.SOPClassUID for ds in destination.received) == sorted([SEG_CLASS, SR_CLASS])
    seg = next(ds for ds in destination.received if ds.SOPClassUID == SEG_CLASS)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert {s.SegmentLabel for s in seg.SegmentSequence} >= {"Infection"}
    status = run_cli("listen", "--status", "--storage", tmp_path / "node")
    assert status.returncode == 0 and source.SeriesInstanceUID in status.stdout and "sent" in status.stdout


@pytest.mark.parametrize("hu, reason", [(0, "do not look like CT"), (-1000, "no lungs")])
def test_a_series_that_is_no_chest_ct_fails_with_its_reason_and_nothing_is_sent(tmp_path, destination, hu, reason):
    """Three uncompressed CT slices of water (0 HU: not a CT in Hounsfield units) or of air (a CT with no lungs)."""
    series = tmp_path / "uniform"
    series.mkdir()
    template = sorted(P001_DICOM.iterdir())[:3]
    uid = generate_uid()
    for index, path in enumerate(template):
        ds = pydicom.dcmread(path)
        stored = round((hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
        dtype = np.int16 if ds.PixelRepresentation == 1 else np.uint16
        ds.PixelData = np.full((ds.Rows, ds.Columns), stored, dtype).tobytes()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(series / f"{index}.dcm", enforce_file_format=True)
    row = through_a_node(series, tmp_path / "node", destination)
    assert row.state == FAILED and reason in row.message and not destination.received


def test_an_unreachable_destination_is_retried_and_stays_visible(tmp_path):
    queue = SeriesQueue(tmp_path)
    queue.instance_stored("1.2.3", "1.2", PACS_AE, now=100.0)
    queue.promote_stable(10, now=200.0)
    assert queue.take_waiting().series_uid == "1.2.3"
    queue.set_state("1.2.3", "sending")
    queue.send_failed("1.2.3", "no association with PACS@127.0.0.1:1", now=1000.0)
    queue.send_failed("1.2.3", "no association with PACS@127.0.0.1:1", now=1002.0)
    assert queue.due_for_sending(now=1005.0) == [] and len(queue.due_for_sending(now=1006.0)) == 1
    [row] = queue.rows()
    assert row.attempts == 2 and "no association" in row.message


def test_listen_refuses_bad_settings_in_one_line(tmp_path):
    result = run_cli("listen", "--storage", tmp_path, "--port", "11112", "--ae-title", "X", "--allow", "Y",
                     "--destination", "nonsense")
    assert result.returncode == 2 and "AET@HOST:PORT" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = run_cli("listen", "--status", "--storage", tmp_path / "none")
    assert result.returncode == 2 and "no node queue here" in result.stderr


class Orthanc:
    """A real Orthanc PACS (the Debian package) on loopback ports, with its own configuration and storage."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("Orthanc")
        if binary is None:
            pytest.fail("Orthanc is not installed: `make test` installs the Debian package `orthanc`")
        self.http_port, self.dicom_port = free_port(), free_port()
        database = str(folder / "db")
        config = {"Name": "LightSeg tests", "StorageDirectory": database, "IndexDirectory": database,
                  "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
                  "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
                  "DicomCheckCalledAet": False, "DicomModalities": {}}
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-500:]}")
                time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")

    def get(self, path: str):
        return self.request("GET", path)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture
def orthanc(tmp_path):
    server = Orthanc(tmp_path)
    yield server
    server.close()


def upload_p001(orthanc: Orthanc) -> str:
    """P001 into Orthanc, as the scanner would send it; returns Orthanc's id of the study."""
    study = ""
    for path in sorted(P001_DICOM.iterdir()):
        study = orthanc.request("POST", "/instances", path.read_bytes())["ParentStudy"]
    return study


def route(orthanc: Orthanc, study: str, node: Node) -> None:
    """The PACS's routing rule, by hand: declare the node and send it the study (synchronous C-STORE)."""
    orthanc.request("PUT", "/modalities/lightseg",
                    json.dumps({"AET": NODE_AE, "Host": "127.0.0.1", "Port": node.settings.port}).encode())
    orthanc.request("POST", "/modalities/lightseg/store", study.encode())


def orthanc_node(storage: Path, orthanc: Orthanc, allowed: str = "ORTHANC", stable: float = 1.0) -> Node:
    return Node(NodeSettings(storage, NODE_AE, [allowed], ("ORTHANC", "127.0.0.1", orthanc.dicom_port),
                             port=free_port(), stable_seconds=stable, device="cpu"))


def test_orthanc_routes_p001_to_the_node_and_gets_seg_and_sr_back_into_the_study(tmp_path, orthanc):
    node = orthanc_node(tmp_path / "node", orthanc)
    node.start()
    try:
        study = upload_p001(orthanc)
        route(orthanc, study, node)
        assert node.wait_until_idle(300), node.queue.rows()
    finally:
        node.stop()
    series = orthanc.get(f"/studies/{study}/series")
    by_modality = {s["MainDicomTags"]["Modality"]: s for s in series}
    assert sorted(by_modality) == ["CT", "SEG", "SR"]
    seg_instance = by_modality["SEG"]["Instances"][0]
    seg = pydicom.dcmread(io.BytesIO(urllib.request.urlopen(
        f"http://127.0.0.1:{orthanc.http_port}/instances/{seg_instance}/file").read()))
    assert seg.SOPClassUID == SEG_CLASS
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == by_modality["CT"]["MainDicomTags"]["SeriesInstanceUID"]
    assert {s.SegmentLabel for s in seg.SegmentSequence} >= {"Infection"}


def test_series_with_invalid_uids_ends_failed_with_its_reason(tmp_path, destination):
    """A study UID that breaks the standard (as cap002's does) cannot be referenced by a Segmentation."""
    series = tmp_path / "bad-uids"
    series.mkdir()
    uid = generate_uid()
    for index, path in enumerate(sorted(P001_DICOM.iterdir())[:3]):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.03.4", uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(series / f"{index}.dcm")
    row = through_a_node(series, tmp_path / "node", destination)
    assert row.state == FAILED and "UID" in row.message and not destination.received


def test_with_a_certificate_the_node_speaks_tls_only(tmp_path, destination):
    key, certificate = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True)
    node = Node(NodeSettings(tmp_path / "node", NODE_AE, [PACS_AE], (PACS_AE, "127.0.0.1", destination.port),
                             port=free_port(), device="cpu", tls=(certificate, key)))
    node.start()
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate))
        client.check_hostname = False
        ae = AE(ae_title=PACS_AE)
        ae.add_requested_context(Verification)
        secure = ae.associate("127.0.0.1", node.settings.port, ae_title=NODE_AE, tls_args=(client, None))
        assert secure.is_established and secure.send_c_echo().Status == 0x0000
        secure.release()
        plain = ae.associate("127.0.0.1", node.settings.port, ae_title=NODE_AE)
        assert not plain.is_established
    finally:
        node.stop()


def test_orthanc_not_allowed_is_refused_and_a_node_killed_after_receiving_delivers_once(tmp_path, orthanc):
    storage = tmp_path / "node"
    study = upload_p001(orthanc)
    closed = orthanc_node(storage, orthanc, allowed="SOMEONE")
    closed.start()
    try:
        with pytest.raises(urllib.error.HTTPError):  # Orthanc's C-STORE fails: its AE title is not allowed
            route(orthanc, study, closed)
    finally:
        closed.stop()
    assert SeriesQueue(storage).rows() == []
    first = orthanc_node(storage, orthanc, stable=3600)  # never complete while this one runs
    first.start()
    try:
        route(orthanc, study, first)
    finally:
        first.stop()
    assert [row.state for row in SeriesQueue(storage).rows()] == [RECEIVING]
    for _ in range(2):  # restarted, and restarted once more: the results go out exactly once
        node = orthanc_node(storage, orthanc, stable=0)
        node.start()
        try:
            assert node.wait_until_idle(300)
        finally:
            node.stop()
    assert [row.state for row in SeriesQueue(storage).rows()] == [SENT]
    series = orthanc.get(f"/studies/{study}/series")
    assert sorted((s["MainDicomTags"]["Modality"], len(s["Instances"])) for s in series) == \
        [("CT", 148), ("SEG", 1), ("SR", 1)]

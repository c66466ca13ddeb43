"""What a batch is made of: the studies of an input tree or manifest, where their outputs go, and their fingerprints."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pydicom

from ..dicom_series import is_dicomdir
from ..errors import LightSegError
from ..io import VOLUME_SUFFIXES, suffix_of

FORMATS = ("nrrd", "nii.gz", "seg.nrrd", "dcm")


@dataclass(frozen=True)
class Study:
    """One CT to segment: its id (its path relative to the input tree, or the manifest's), and its file or folder."""

    id: str
    path: Path


def _is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (preamble, then "DICM"); folders of such files are DICOM series studies."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def find_studies(source: Path) -> list[Study]:
    """Every study of ``source``: a CSV manifest (``id,path``), or a folder tree in which every volume file is a
    study, and so is every DICOM study: a folder with a DICOMDIR (everything below it), or the folders of one
    StudyInstanceUID's series, as one study at their common folder when nothing else lies below it (``segment``
    then chooses the series, by the same rule)."""
    if not source.exists():
        raise LightSegError("no such file or folder", source)
    if source.is_file():
        return _read_manifest(source)
    studies, dicom_folders, dicomdir_roots = [], [], []
    for folder in sorted([source, *(p for p in source.rglob("*") if p.is_dir())]):
        if any(root in folder.parents for root in dicomdir_roots):
            continue  # its files are the DICOMDIR's
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        volumes = [p for p in files if suffix_of(p) in VOLUME_SUFFIXES]
        studies += [Study(_relative_id(p, source), p) for p in volumes]
        if any(is_dicomdir(p) for p in files):
            dicomdir_roots.append(folder)
            studies.append(Study(_relative_id(folder, source) or folder.name, folder))
        elif any(_is_dicom_file(p) for p in files if p not in volumes):
            dicom_folders.append(folder)
    studies += [Study(_relative_id(folder, source) or folder.name, folder) for folder in _dicom_studies(dicom_folders)]
    if not studies:
        raise LightSegError("no CT volumes or DICOM series found in this folder", source)
    return sorted(studies, key=lambda study: study.id)


def _study_uid(folder: Path) -> str:
    """The StudyInstanceUID of a folder's first DICOM file ("" when it has none)."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and _is_dicom_file(path):
            try:
                return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                           .get("StudyInstanceUID", ""))
            except Exception:  # noqa: BLE001 - an unreadable file leaves the folder a study of its own
                return ""
    return ""


def _dicom_studies(folders: list[Path]) -> list[Path]:
    """Folders of DICOM files, gathered by study: one study's series folders become their common folder when every
    DICOM folder below it belongs to that study; otherwise (or without a StudyInstanceUID) each stays a study."""
    by_study: dict[str, list[Path]] = {}
    for folder in folders:
        by_study.setdefault(_study_uid(folder) or f"folder:{folder}", []).append(folder)
    studies = []
    for members in by_study.values():
        common = Path(os.path.commonpath(members))
        below = [f for f in folders if f == common or common in f.parents]
        studies += [common] if len(members) > 1 and len(below) == len(members) else members
    return studies


def _relative_id(path: Path, root: Path) -> str:
    relative = path.relative_to(root).as_posix()
    suffix = suffix_of(path) if path.is_file() else ""
    return relative[: len(relative) - len(suffix)] if suffix else relative


def _read_manifest(path: Path) -> list[Study]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        studies = [Study(row["id"].strip(), (path.parent / row["path"].strip())) for row in rows]
    except (OSError, KeyError, UnicodeDecodeError, csv.Error) as exc:
        raise LightSegError(f"not a manifest CSV with id,path columns ({type(exc).__name__}: {exc})", path) from None
    if not studies:
        raise LightSegError("the manifest lists no studies", path)
    ids = [s.id for s in studies]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated or any(not i or i.startswith(("/", "..")) or "/../" in f"/{i}/" for i in ids):
        raise LightSegError(f"study ids must be unique relative names (problem: {(repeated or ids)[0]!r})", path)
    return studies


def fingerprint(path: Path) -> str:
    """The input's identity for resuming: names, sizes and modification times of its files (sha256)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()


def output_paths(study: Study, out_dir: Path, fmt: str) -> tuple[Path, Path]:
    """The study's mask and report, mirroring the input layout under ``out_dir``."""
    base = out_dir / study.id
    return base.parent / f"{base.name}.{fmt}", base.parent / f"{base.name}.json"

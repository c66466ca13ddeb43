"""Results for PACS: a DICOM Segmentation and a DICOM measurement report (TID 1500) for a DICOM input series.

Both objects are new instances in the source's study (new series and SOP instance UIDs), reference the source series,
copy the source's patient and study attributes (highdicom does) and add nothing else about the patient. The segments
carry the same SNOMED CT codes as the ``.seg.nrrd`` output and the Slicer module (``io.SEGMENTS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from . import __version__
from .cards import ModelCard
from .errors import LightSegError
from .io import PATTERN_SEGMENTS, SEGMENTS, segment_masks, segments_of, write_atomically

SEG_SERIES_NUMBER = 9101
SR_SERIES_NUMBER = 9102
CHEST_CT = Code("24627-2", "LN", "CT Chest")
MILLILITRE = Code("mL", "UCUM", "milliliter")
# TID 1500 has no standard concept for "percent of a lung involved"; a private coding scheme names it.
PERCENT_INVOLVED = Code("PCTINV", "99LIGHTSEG", "Percent of lung volume involved")
HIGH_OPACITY = Code("PCTHO", "99LIGHTSEG", "Percent of lung volume with opacity denser than -200 HU")
ZONES = {"upper": codes.SCT.UpperZoneOfLung, "middle": codes.SCT.MiddleZoneOfLung, "lower": codes.SCT.LowerZoneOfLung}
PARTS = {"anterior": codes.SCT.Anterior, "posterior": codes.SCT.Posterior, "peripheral": codes.SCT.Peripheral,
         "central": codes.SCT.Central}


def _code(triple: Sequence[str]) -> Code:
    scheme, value, meaning = triple
    return Code(value, scheme, meaning)


# Type 2 patient and study attributes: present in every instance, empty when unknown. Anonymised series often drop
# them; the outputs then carry them empty (DICOM's "unknown"), never a made-up value.
TYPE2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber")
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def read_source_series(files: Sequence[str], path: Path) -> list[pydicom.Dataset]:
    """The source series' headers (no pixel data), in the order of the volume's slices; refused with one line when
    they cannot be referenced (a UID missing or not a valid DICOM UID)."""
    mode = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE  # a bad value is reported below, once
    try:
        return [_referenceable(pydicom.dcmread(f, stop_before_pixels=True), path) for f in files]
    except (OSError, pydicom.errors.InvalidDicomError) as exc:
        raise LightSegError(f"cannot read the source DICOM headers ({exc})", path) from None
    finally:
        pydicom.config.settings.reading_validation_mode = mode


def _referenceable(dataset: pydicom.Dataset, path: Path) -> pydicom.Dataset:
    for keyword in REQUIRED_UIDS:
        value = str(dataset.get(keyword, ""))
        if not pydicom.uid.UID(value).is_valid:
            raise LightSegError(f"the source series cannot be referenced from DICOM outputs: {keyword} {value!r} "
                                "is not a valid DICOM UID", path)
    for keyword in TYPE2_ATTRIBUTES:
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    return dataset


def _algorithm(card: ModelCard) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="LightSeg", family=codes.cid7162.ArtificialIntelligence, version=__version__, source=card.id,
        parameters={"model": f"{card.id} {card.version}", "weights_sha256": card.weights_sha256})


def build_segmentation(labels: sitk.Image, sources: list[pydicom.Dataset], card: ModelCard,
                       patterns: sitk.Image | None = None) -> hd.seg.Segmentation:
    """A binary DICOM Segmentation of "Lungs" and "Infection" (and, with a pattern map, "Ground-glass opacity" and
    "Consolidation") on the source frames (labels in the source's order)."""
    label_array = sitk.GetArrayViewFromImage(labels)
    if label_array.shape[0] != len(sources):
        raise LightSegError(f"the label map has {label_array.shape[0]} slices, the source series {len(sources)}")
    specs = segments_of(patterns is not None)
    by_id = segment_masks(label_array, None if patterns is None else sitk.GetArrayViewFromImage(patterns))
    masks = np.stack([by_id[s["id"]] for s in specs], axis=-1)
    algorithm = _algorithm(card)
    descriptions = []
    for number, segment in enumerate(specs, start=1):
        terminology = segment["terminology"]
        region = terminology.get("anatomicRegion")
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment["name"],
            segmented_property_category=_code(terminology["category"]),
            segmented_property_type=_code(terminology["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            anatomic_regions=[_code(region)] if region else None))
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LightSeg", manufacturer_model_name=card.id,
        software_versions=f"LightSeg {__version__}; {card.id} {card.version}",
        device_serial_number=card.weights_sha256[:16], series_description=f"LightSeg {card.id} {card.version}")


def _group(name: str, segmentation: hd.seg.Segmentation, segment_number: int, finding: Code,
           laterality: Code | None, measurements: list[tuple[Code, float, Code]], location: Code | None = None,
           modifier: Code | None = None) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """One TID 1500 measurement group of a segment, its finding site the lung (or ``location``, a zone of it) with
    laterality and topographical ``modifier`` where given."""
    site = hd.sr.FindingSite(anatomic_location=location or _code(SEGMENTS[0]["terminology"]["type"]),
                             laterality=laterality, topographical_modifier=modifier)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=name),
        referenced_segment=hd.sr.ReferencedSegment.from_segmentation(segmentation, segment_number=segment_number),
        finding_type=finding, finding_sites=[site],
        measurements=[hd.sr.Measurement(name=concept, value=value, unit=unit) for concept, value, unit in measurements])


def _regional_groups(segmentation: hd.seg.Segmentation, report: dict[str, Any], infection_type: Code
                     ) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """Per lung: the percent involved of each zone, half and shell (``regions.py``), and the high-opacity percent."""
    groups = []
    for side, laterality in (("right", codes.SCT.Right), ("left", codes.SCT.Left)):
        regions = report.get("regions", {}).get(side)
        if not regions:
            continue
        for zone, location in ZONES.items():
            groups.append(_group(f"Infection, {side} lung, {zone} zone", segmentation, 2, infection_type, laterality,
                                 [(PERCENT_INVOLVED, regions["zones_percent"][zone], codes.UCUM.Percent)], location))
        for part, modifier in PARTS.items():
            groups.append(_group(f"Infection, {side} lung, {part}", segmentation, 2, infection_type, laterality,
                                 [(PERCENT_INVOLVED, regions[f"{part}_percent"], codes.UCUM.Percent)],
                                 modifier=modifier))
        groups.append(_group(f"High opacity, {side} lung", segmentation, 2, infection_type, laterality,
                             [(HIGH_OPACITY, regions["high_opacity_percent"], codes.UCUM.Percent)]))
    return groups


def _pattern_groups(segmentation: hd.seg.Segmentation, report: dict[str, Any]
                    ) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """Ground-glass and consolidation volumes, in total and per lung (segments 3 and 4), when the report has them."""
    patterns = report.get("patterns")
    if not patterns:
        return []
    groups = []
    for number, (key, segment) in enumerate(zip(("ground_glass", "consolidation"), PATTERN_SEGMENTS), start=3):
        finding = _code(segment["terminology"]["type"])
        groups.append(_group(segment["name"], segmentation, number, finding, None,
                             [(codes.SCT.Volume, patterns[f"{key}_ml"], MILLILITRE)]))
        for side, laterality in (("right", codes.SCT.Right), ("left", codes.SCT.Left)):
            groups.append(_group(f"{segment['name']}, {side} lung", segmentation, number, finding, laterality,
                                 [(codes.SCT.Volume, patterns[side][f"{key}_ml"], MILLILITRE)]))
    return groups


def build_measurement_report(segmentation: hd.seg.Segmentation, sources: list[pydicom.Dataset],
                             report: dict[str, Any], card: ModelCard) -> hd.sr.Comprehensive3DSR:
    """TID 1500: infection and lung volumes (mL) and the percent of each lung involved, the ground-glass and
    consolidation volumes, and per lung the percent involved by zone, half and shell and the high-opacity percent;
    each group references its segment of ``segmentation`` (and through it the ``sources`` it was made on, which are
    the evidence too)."""
    lungs_type = _code(SEGMENTS[0]["terminology"]["type"])
    infection_type = _code(SEGMENTS[1]["terminology"]["type"])
    volume, ml, percent = codes.SCT.Volume, MILLILITRE, codes.UCUM.Percent
    groups = [
        _group("Infection", segmentation, 2, infection_type, None,
               [(volume, report["infection_ml"], ml), (PERCENT_INVOLVED, report["percent_involved"], percent)]),
        _group("Lungs", segmentation, 1, lungs_type, None, [(volume, report["lung_volume_ml"], ml)]),
    ]
    for side, laterality in (("right", codes.SCT.Right), ("left", codes.SCT.Left)):
        lung = report["lungs"][side]
        groups.append(_group(f"Infection, {side} lung", segmentation, 2, infection_type, laterality,
                             [(volume, lung["infection_ml"], ml), (PERCENT_INVOLVED, lung["percent_involved"], percent)]))
        groups.append(_group(f"{side.capitalize()} lung", segmentation, 1, lungs_type, laterality,
                             [(volume, lung["volume_ml"], ml)]))
    groups += _pattern_groups(segmentation, report) + _regional_groups(segmentation, report, infection_type)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="LightSeg", manufacturer_name="LightSeg", model_name=f"{card.id} {card.version}"))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CHEST_CT, imaging_measurements=groups)
    document = hd.sr.Comprehensive3DSR(
        evidence=[segmentation, *sources], content=content, series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LightSeg",
        series_description=f"LightSeg {card.id} {card.version} measurements")
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = PERCENT_INVOLVED.scheme_designator
    scheme.CodingSchemeName = "LightSeg private codes"
    scheme.CodingSchemeResponsibleOrganization = "LightSeg"
    document.CodingSchemeIdentificationSequence = [scheme]
    return document


def write_dataset(dataset: pydicom.Dataset, path: Path) -> None:
    write_atomically(path, lambda tmp: dataset.save_as(tmp, enforce_file_format=True))

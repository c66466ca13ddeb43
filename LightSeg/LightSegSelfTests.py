"""LightSeg's self-test cases, as plain functions with no Qt.

``LightSegTest`` (LightSeg.py, "Reload and Test" in Slicer) runs them in the application; ``make test`` runs them on
Slicer's core libraries (Testing/test_slicer_core.py). Each starts from an empty scene and raises AssertionError (or
LightSegError) on failure. They need the bundled sample and a model; no network.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import slicer
import slicer.util
import vtk

from LightSegLogic import LightSegCoreLogic, setItemParent

MODEL = "miniseg-covid"


def loadSample(name="P001-chest"):
    """The bundled sample CT, read by Slicer's volumes logic."""
    from LightSegLib.sample import sample_path

    volumeNode = slicer.modules.volumes.logic().AddArchetypeVolume(str(sample_path()), name)
    assert volumeNode is not None, "the volumes logic could not read the bundled sample"
    return volumeNode


def libraryLabels(path):
    """What ``lightseg segment`` writes for a file: the label and pattern arrays (k, j, i), by the CLI's own code
    path."""
    import SimpleITK as sitk

    from LightSegLib.pipeline import SegmentRequest, segment_file

    with tempfile.TemporaryDirectory() as folder:
        output, patterns = Path(folder) / "labels.nrrd", Path(folder) / "patterns.nrrd"
        segment_file(SegmentRequest(input=Path(path), output=output, model=MODEL, device="cpu", patterns=patterns))
        return (sitk.GetArrayFromImage(sitk.ReadImage(str(output))),
                sitk.GetArrayFromImage(sitk.ReadImage(str(patterns))))


def resolvedTerminology(segment):
    """(category, type, region) code meanings of a segment's terminology as listed in the terminologies that Slicer's
    terminologies logic has loaded; None for a code that is not listed there."""
    logic = slicer.modules.terminologies.logic()
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(segment.GetTerminology(), entry), segment.GetTerminology()
    context, category = entry.GetTerminologyContextName(), entry.GetCategoryObject()
    categories = _listed(logic.GetNumberOfCategoriesInTerminology(context), slicer.vtkSlicerTerminologyCategory,
                         lambda i, found: logic.GetNthCategoryInTerminology(context, i, found))
    types = _listed(logic.GetNumberOfTypesInTerminologyCategory(context, category), slicer.vtkSlicerTerminologyType,
                    lambda i, found: logic.GetNthTypeInTerminologyCategory(context, category, i, found))
    regionContext = entry.GetRegionContextName()
    regions = _listed(logic.GetNumberOfRegionsInRegionContext(regionContext), slicer.vtkSlicerTerminologyType,
                      lambda i, found: logic.GetNthRegionInRegionContext(regionContext, i, found)) \
        if regionContext else {}
    return (categories.get(_code(category)), types.get(_code(entry.GetTypeObject())),
            regions.get(_code(entry.GetRegionObject())) if regionContext else None)


def _code(item):
    return item.GetCodingSchemeDesignator(), item.GetCodeValue()


def _listed(count, itemClass, fetch):
    """{(scheme, value): meaning} of the ``count`` items that ``fetch(index, item)`` fills in."""
    found = {}
    for index in range(count):
        item = itemClass()
        fetch(index, item)
        found[_code(item)] = item.GetCodeMeaning()
    return found


def test_SegmentSample():
    """The sample, segmented by the Logic: segments on the volume's grid, identical to ``lightseg segment``,
    terminology resolved by Slicer, under the study, every report row in the table, a .seg.nrrd that reads back."""
    from LightSegLib.io import INFECTION, LUNG
    from LightSegLib.sample import sample_path

    slicer.mrmlScene.Clear(0)
    volumeNode = loadSample()
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "P001")
    study = shNode.CreateStudyItem(patient, "Chest CT")
    setItemParent(shNode, volumeNode, study)
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "P001 infection")
    logic = LightSegCoreLogic()
    report = logic.segment(volumeNode, segmentationNode, MODEL, "cpu")

    expected, patterns = libraryLabels(str(sample_path()))
    segmentation = segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 4
    for name, value, code in (("Ground-glass opacity", 1, "112120"), ("Consolidation", 2, "95436008")):
        segmentId = segmentation.GetSegmentIdBySegmentName(name)
        pattern = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        assert np.array_equal(pattern > 0, patterns == value), f"{name} differs from lightseg segment --patterns"
        assert f"^{code}^" in segmentation.GetSegment(segmentId).GetTerminology()
    infection = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, "Infection", volumeNode)
    lungs = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, "Lungs", volumeNode)
    assert infection.shape == slicer.util.arrayFromVolume(volumeNode).shape
    assert np.array_equal(infection > 0, expected == INFECTION), "infection differs from lightseg segment"
    assert np.array_equal(lungs > 0, np.isin(expected, (INFECTION, LUNG))), "lungs differ from lightseg segment"
    assert resolvedTerminology(segmentation.GetSegment("Lungs")) == ("Anatomical Structure", "Lung", None)
    assert resolvedTerminology(segmentation.GetSegment("Infection")) == \
        ("Morphologically Altered Structure", "Inflammation", "Lung")
    assert shNode.GetItemParent(shNode.GetItemByDataNode(segmentationNode)) == study

    tableNode = logic.showResults(report, segmentationNode, showSurface=True)
    rows = logic.reportRows(report)
    assert tableNode.GetNumberOfRows() == len(rows)
    assert [tuple(tableNode.GetCellText(r, c) for c in range(3)) for r in range(len(rows))] == rows
    assert segmentationNode.GetSegmentation().ContainsRepresentation("Closed surface")

    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "page.pdf"
        logic.saveReportPage(page)  # the one-page report of this result, as lightseg segment --report-pdf writes it
        assert page.read_bytes().startswith(b"%PDF") and "miniseg-covid".encode("utf-16-be") in page.read_bytes()
        path = os.path.join(folder, "P001.seg.nrrd")
        storage = segmentationNode.CreateDefaultStorageNode()
        storage.SetFileName(path)
        assert storage.WriteData(segmentationNode), "the segmentation storage node could not write"
        from LightSegLib.io import infection_mask_on_grid, read_image

        reread, _ = infection_mask_on_grid(Path(path), read_image(sample_path()).image)
        assert np.array_equal(reread > 0, expected == INFECTION), "the written .seg.nrrd reads back different"
    return report


def test_SegmentTwiceKeepsOtherSegmentsAndCancelChangesNothing():
    """A second run replaces LightSeg's four segments in place and keeps the user's own segments; a run cancelled
    between batches leaves the node exactly as it was."""
    slicer.mrmlScene.Clear(0)
    volumeNode = loadSample()
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    userId = segmentationNode.GetSegmentation().AddEmptySegment("mine", "My nodule", [0.2, 0.4, 1.0])
    mark = np.zeros(slicer.util.arrayFromVolume(volumeNode).shape, np.uint8)
    mark[30:34, 90:100, 60:70] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mark, segmentationNode, userId, volumeNode)
    logic = LightSegCoreLogic()
    logic.segment(volumeNode, segmentationNode, MODEL, "cpu")
    first = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, "Infection", volumeNode)
    logic.segment(volumeNode, segmentationNode, MODEL, "cpu")
    segmentation = segmentationNode.GetSegmentation()
    names = sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    assert names == ["Consolidation", "Ground-glass opacity", "Infection", "Lungs", "My nodule"], names
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, "Infection", volumeNode), first)
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, userId, volumeNode), mark)

    fresh = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    batches = []
    report = logic.segment(volumeNode, fresh, MODEL, "cpu", progress=lambda done, total: batches.append(done),
                           cancel=lambda: len(batches) >= 2)
    assert report is None and len(batches) == 2
    assert fresh.GetSegmentation().GetNumberOfSegments() == 0
    assert logic.segment(volumeNode, segmentationNode, MODEL, "cpu", cancel=lambda: True) is None
    assert segmentation.GetNumberOfSegments() == 5
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, "Infection", volumeNode), first)


def test_FlippedVolumeAgrees():
    """The same voxels stored in another order (j and k swapped, the new j reversed, the IJK-to-RAS matrix changed
    with them so every voxel keeps its place) give the same mask."""
    slicer.mrmlScene.Clear(0)
    volumeNode = loadSample()
    logic = LightSegCoreLogic()
    reference = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    logic.segment(volumeNode, reference, MODEL, "cpu")
    array = slicer.util.arrayFromVolume(volumeNode)
    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    m = slicer.util.arrayFromVTKMatrix(ijkToRas)
    stored = m.copy()
    stored[:, 1] = -m[:, 2]  # new j runs along the old k, reversed
    stored[:, 2] = m[:, 1]  # new k is the old j
    stored[:, 3] = m[:, 3] + m[:, 2] * (array.shape[0] - 1)
    flipped = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, volumeNode, "flipped")
    slicer.util.updateVolumeFromArray(flipped, np.ascontiguousarray(np.transpose(array, (1, 0, 2))[:, ::-1]))
    flipped.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(stored))
    other = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    logic.segment(flipped, other, MODEL, "cpu")
    a = slicer.util.arrayFromSegmentBinaryLabelmap(reference, "Infection", volumeNode)
    b = slicer.util.arrayFromSegmentBinaryLabelmap(other, "Infection", volumeNode)
    assert a.any() and np.array_equal(a > 0, b > 0)


def test_BadVolumesAreRefusedWithNothingWritten():
    """A volume that is not a CT in HU, and a CT-like volume without lungs: the library's one-line message, and the
    segmentation node untouched."""
    from LightSegLib.errors import LightSegError

    slicer.mrmlScene.Clear(0)
    volumeNode = loadSample()
    logic = LightSegCoreLogic()
    messages = []
    for name, values in (("not CT", lambda a: ((a - a.min()) / 10).astype(np.int16)), ("no lungs", solidBody)):
        bad = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, volumeNode, name)
        slicer.util.updateVolumeFromArray(bad, values(slicer.util.arrayFromVolume(volumeNode)))
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        try:
            logic.segment(bad, segmentationNode, MODEL, "cpu")
        except LightSegError as error:
            messages.append(str(error))
        else:
            raise AssertionError(f"{name}: segmented without complaint")
        assert segmentationNode.GetSegmentation().GetNumberOfSegments() == 0
    assert messages[0].startswith("not CT: intensities do not look like CT"), messages[0]
    assert messages[1] == "no lungs: no lungs found in this volume; nothing was written", messages[1]
    assert all("\n" not in m for m in messages)
    return messages


def libraryParent():
    """The folder that holds LightSegLib: beside this file in Slicer, the repository in a checkout."""
    import LightSegLib

    return os.path.dirname(os.path.dirname(os.path.abspath(LightSegLib.__file__)))


def solidBody(array):
    """A CT-like array without lungs: air around a body of soft tissue (40 HU) that holds no air."""
    body = np.full(array.shape, -1000, np.int16)
    k, j, i = array.shape
    body[:, j // 4: 3 * j // 4, i // 4: 3 * i // 4] = 40
    return body


def test_FinetuneFromScene(newName="selftest-finetune"):
    """Two (volume, segmentation, segment) cases of the scene, exported by storage nodes, fine-tune a new model for a
    few seconds; it appears in the Logic's model list, and the exported cases are deleted."""
    from LightSegLib import registry

    slicer.mrmlScene.Clear(0)
    pairs = []
    for index in range(2):
        volumeNode = loadSample(f"case{index}")
        array = slicer.util.arrayFromVolume(volumeNode)
        rows = slice(array.shape[1] // 4, array.shape[1] // 2)
        label = np.zeros(array.shape, np.uint8)
        band = slice(20 + 5 * index, 50 + 5 * index)
        label[band, rows] = (array[band, rows] > -750) & (array[band, rows] < -300)
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("corrected", "Corrected infection")
        slicer.util.updateSegmentBinaryLabelmapFromArray(label, segmentationNode, segmentId, volumeNode)
        pairs.append((volumeNode, segmentationNode, segmentId))
    logic = LightSegCoreLogic()
    args, workDir = logic.prepareFinetune(pairs, "", MODEL, newName, 0.15)
    try:
        assert sorted(os.listdir(workDir)) == ["case0.nrrd", "case0.seg.nrrd", "case1.nrrd", "case1.seg.nrrd",
                                               "pairs.csv"]
        finished = subprocess.run(args + ["--stop-file", os.path.join(workDir, "STOP")], cwd=libraryParent(),
                                  capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(workDir, ignore_errors=True)
    assert finished.returncode == 0, finished.stderr
    assert '"event": "done"' in finished.stdout
    assert not os.path.exists(workDir)
    assert newName in [m["id"] for m in logic.models()]
    registry.remove_user_model(newName)


def test_FinetuneWithCTsWithoutInfection(newName="selftest-negatives"):
    """A volume node given as a CT without infection (the retrain panel's "Add CT without infection") is exported by
    its storage node alone, fine-tunes a new model with ``--negative-volumes`` for a few seconds, and the export is
    deleted. (The bundled sample stands in for a normal CT here: this checks the path, not the accuracy.)"""
    from LightSegLib import registry

    slicer.mrmlScene.Clear(0)
    volumeNode = loadSample("normal")
    logic = LightSegCoreLogic()
    args, workDir = logic.prepareFinetune([], "", MODEL, newName, 0.05, negativeVolumes=[volumeNode])
    try:
        assert os.listdir(workDir) == ["without-infection"], os.listdir(workDir)
        assert os.listdir(os.path.join(workDir, "without-infection")) == ["ct0.nrrd"]
        assert "--pairs" not in args and args[args.index("--negative-volumes") + 1].endswith("without-infection")
        finished = subprocess.run(args, cwd=libraryParent(), capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(workDir, ignore_errors=True)
    assert finished.returncode == 0, finished.stderr
    done = [line for line in finished.stdout.splitlines() if '"event": "done"' in line]
    assert done and "negatives_held_out" in done[0]
    assert "without infection" in logic.heldOutText(json.loads(done[0]))
    assert newName in [m["id"] for m in logic.models()]
    registry.remove_user_model(newName)


SELF_TESTS = (test_SegmentSample, test_SegmentTwiceKeepsOtherSegmentsAndCancelChangesNothing, test_FlippedVolumeAgrees,
              test_BadVolumesAreRefusedWithNothingWritten, test_FinetuneFromScene, test_FinetuneWithCTsWithoutInfection)

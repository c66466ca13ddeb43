"""LightSeg's logic: MRML nodes in, MRML nodes out, every computation in LightSegLib.

No Qt here: this module imports only Slicer's MRML classes and logics, ``slicer.util``, VTK, numpy and LightSegLib,
so the same code runs inside the Slicer application and, in ``make test``, on Slicer's core libraries (the
``slicer-core`` wheel). What needs the application (widgets, the parameter node GUI binding, PyTorchUtils, the
console process of the retrain panel) stays in ``LightSeg.py``.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import slicer
import slicer.util
import vtk

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)  # LightSegLib and Resources are installed beside this file

RESULTS_TABLE_NAME = "LightSeg results"


def setItemParent(shNode, dataNode, parentItem):
    """Put a data node under ``parentItem`` in the subject hierarchy. The application's subject hierarchy plugins give
    every new data node an item; Slicer's core alone does not, so the item is created when missing."""
    item = shNode.GetItemByDataNode(dataNode)
    if item:
        shNode.SetItemParent(item, parentItem)
    else:
        shNode.CreateItem(parentItem, dataNode)


class LightSegCoreLogic:
    """Segment a volume node into a segmentation node, show the report, export scene cases for fine-tuning."""

    def __init__(self):
        self._segmenters = {}
        self.lastResult = None  # (image, segmentation, report, volume name) of the last run, for the report page

    # --- models -----------------------------------------------------------------------------------------------

    def models(self):
        """[{"id", "tooltip"}] for every bundled and user model."""
        from LightSegLib import registry

        return [{"id": e.card.id, "tooltip": self.cardTooltip(e.card, e.bundled)} for e in registry.list_models()]

    @staticmethod
    def cardTooltip(card, bundled):
        from LightSegLib.cards import validation_summary

        lines = [f"{card.id} {card.version} ({'bundled' if bundled else 'your model'})",
                 f"{card.architecture}, {card.parameters:,} parameters", card.description,
                 f"validation: {validation_summary(card)}",
                 f"test-time flips: {', '.join(card.test_time_flips) or 'none'}",
                 f"3D post-processing: {card.postprocessing or 'none'}",
                 f"licence: {card.licence}", LightSegCoreLogic.compiledText(card)]
        if card.parent:
            lines.append(f"fine-tuned from {card.parent['id']}")
        return "\n".join(line for line in lines if line)

    def compileModel(self, modelId):
        """Build the model's network (and its confirming network) for this computer's CPU, as ``lightseg compile``
        does; segmentations on the CPU run it from then on. Returns the compiled files."""
        from LightSegLib import registry
        from LightSegLib.compiled import compile_network, networks_of

        paths = [compile_network(card) for card in networks_of(registry.resolve(modelId))]
        self._segmenters.clear()  # the loaded ones hold the eager networks
        return paths

    @staticmethod
    def compiledText(card):
        """Whether this computer runs the model's compiled network (``lightseg compile``), for the tooltip."""
        from LightSegLib.compiled import compiled_form

        form = compiled_form(card)
        if form is not None:
            return f"network: {form}, for this computer's CPU"
        return f"network: eager (run 'lightseg compile --model {card.id}' once to compile it for this CPU)"

    @staticmethod
    def diagnosticsText():
        try:
            from LightSegLib.devices import diagnostics
        except ImportError:
            return "PyTorch is not installed yet."
        info = diagnostics()
        gpu = (f"{info['device_name']}, {info['memory_gb']} GB" if info["cuda_available"]
               else "no CUDA device (CPU will be used)")
        return f"torch {info['torch']} (CUDA build {info['cuda_build']}): {gpu}"

    def _segmenter(self, modelId, device):
        from LightSegLib.pipeline import make_segmenter

        key = (modelId, device)
        if key not in self._segmenters:
            self._segmenters[key] = make_segmenter(modelId, device)
        return self._segmenters[key]

    # --- segmenting -------------------------------------------------------------------------------------------

    @staticmethod
    def imageFromVolumeNode(volumeNode):
        """The node's voxels and IJK-to-RAS geometry as a SimpleITK image (LPS), checked to be a CT in HU."""
        from LightSegLib.io import check_ct_intensities
        from LightSegLib.scene import image_from_ras_array

        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        image = image_from_ras_array(slicer.util.arrayFromVolume(volumeNode), slicer.util.arrayFromVTKMatrix(ijkToRas))
        check_ct_intensities(image, volumeNode.GetName())
        return image

    def segment(self, volumeNode, segmentationNode, modelId, device="auto", progress=None, cancel=None):
        """Segment ``volumeNode`` into ``segmentationNode`` ("Lungs", "Infection", "Ground-glass opacity",
        "Consolidation"); returns the report, or None if cancelled. Raises ``LightSegError`` (one line) for a volume
        that is not a CT or has no lungs. The node is only written once the whole volume is segmented, so a cancel or
        an error leaves it as it was; LightSeg's segments are replaced in place, and other segments are kept."""
        import SimpleITK as sitk

        from LightSegLib.engine import Cancelled
        from LightSegLib.errors import LightSegError
        from LightSegLib.io import segment_masks
        from LightSegLib.report import build_report
        from LightSegLib.scene import segment_specs

        image = self.imageFromVolumeNode(volumeNode)
        segmenter = self._segmenter(modelId, device)
        try:
            result = segmenter.segment_volume(image, progress, cancel)
        except Cancelled:
            return None
        if not result.lungs.lungs.any():
            raise LightSegError("no lungs found in this volume; nothing was written", volumeNode.GetName())
        patterns = None if result.patterns is None else sitk.GetArrayViewFromImage(result.patterns)
        masks = segment_masks(sitk.GetArrayViewFromImage(result.labels), patterns)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentation = segmentationNode.GetSegmentation()
        for spec in segment_specs(patterns is not None):
            segmentId = segmentation.GetSegmentIdBySegmentName(spec["name"])
            if not segmentId:
                segmentId = segmentation.AddEmptySegment(spec["id"], spec["name"], spec["color"])
            segmentation.GetSegment(segmentId).SetTerminology(spec["terminology"])
            mask = masks[spec["id"]].astype(np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, volumeNode)
        self.placeUnderStudy(volumeNode, segmentationNode)
        report = build_report(result, segmenter.card, str(segmenter.device), volumeNode.GetName(), image=image)
        self.lastResult = (image, result, report, volumeNode.GetName())
        return report

    def saveReportPage(self, path):
        """The last segmentation's one-page report (``lightseg segment --report-pdf``) written to ``path``."""
        from LightSegLib.errors import LightSegError
        from LightSegLib.io import write_atomically
        from LightSegLib.report_page import pdf_bytes, render_page

        if self.lastResult is None:
            raise LightSegError("segment a volume first: there is no result to put on a page", path)
        image, result, report, name = self.lastResult
        pdf = pdf_bytes(render_page(image, result, report, f"Volume: {name}"), report)
        write_atomically(Path(path), lambda tmp: tmp.write_bytes(pdf))

    @staticmethod
    def placeUnderStudy(volumeNode, segmentationNode):
        """The segmentation goes where the CT is in the subject hierarchy (its study, for DICOM data)."""
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        volumeItem = shNode.GetItemByDataNode(volumeNode)
        studyItem = shNode.GetItemParent(volumeItem) if volumeItem else 0
        if studyItem:
            setItemParent(shNode, segmentationNode, studyItem)

    @staticmethod
    def reportRows(report):
        from LightSegLib.scene import results_rows

        return results_rows(report)

    @staticmethod
    def rowsAsText(rows):
        from LightSegLib.scene import rows_as_tsv

        return rows_as_tsv(rows)

    def showResults(self, report, segmentationNode, showSurface=False):
        """Fill (or create) the results table node; build the 3D surface when asked."""
        tableNode = slicer.mrmlScene.GetFirstNodeByName(RESULTS_TABLE_NAME)
        if not tableNode:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", RESULTS_TABLE_NAME)
        table = tableNode.GetTable()
        table.Initialize()
        rows = self.reportRows(report)
        for index, title in enumerate(("Measure", "Value", "Unit")):
            column = vtk.vtkStringArray()
            column.SetName(title)
            for row in rows:
                column.InsertNextValue(row[index])
            table.AddColumn(column)
        tableNode.Modified()
        if showSurface:
            segmentationNode.CreateClosedSurfaceRepresentation()
        return tableNode

    # --- fine-tuning on the scene's cases -----------------------------------------------------------------------

    @staticmethod
    def heldOutText(doneEvent):
        """The fine-tune's held-out comparison (the ``done`` event of ``--progress-json``) as one line of text."""
        from LightSegLib.training.finetune import held_out_line

        return held_out_line(doneEvent, "parent", "new")

    @staticmethod
    def exportVolume(volumeNode, volumePath):
        """Write a volume with its MRML storage node."""
        volumeStorage = volumeNode.CreateDefaultStorageNode()
        volumeStorage.SetFileName(volumePath)
        if not volumeStorage.WriteData(volumeNode):
            raise RuntimeError(f"could not write {volumePath}")

    @classmethod
    def exportCase(cls, volumeNode, segmentationNode, segmentId, volumePath, labelPath):
        """Write a volume and one of its segments (renamed "Infection") with MRML storage nodes."""
        cls.exportVolume(volumeNode, volumePath)
        exported = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        try:
            exported.GetSegmentation().CopySegmentFromSegmentation(segmentationNode.GetSegmentation(), segmentId)
            exported.GetSegmentation().GetSegment(segmentId).SetName("Infection")
            segmentationStorage = exported.CreateDefaultStorageNode()
            segmentationStorage.SetFileName(labelPath)
            if not segmentationStorage.WriteData(exported):
                raise RuntimeError(f"could not write {labelPath}")
        finally:
            slicer.mrmlScene.RemoveNode(exported)

    def prepareFinetune(self, scenePairs, pairsFolder, baseModel, newName, minutes, adaptAllLayers=False,
                        negativeVolumes=()):
        """Export the scene's (volume, segmentation, segment) cases and its CTs without infection (volume nodes
        alone) to a new temporary folder, list the cases (and the pairs of ``pairsFolder``'s ``volumes``/``labels``)
        in a CSV, and return the ``lightseg finetune`` command and the folder, which the caller deletes when the run
        ends."""
        from LightSegLib.io import pair_by_name

        workDir = tempfile.mkdtemp(prefix="lightseg-finetune-")
        try:
            lines = ["volume,label"]
            for index, (volumeNode, segmentationNode, segmentId) in enumerate(scenePairs):
                volumeName, labelName = f"case{index}.nrrd", f"case{index}.seg.nrrd"
                self.exportCase(volumeNode, segmentationNode, segmentId, os.path.join(workDir, volumeName),
                                os.path.join(workDir, labelName))
                lines.append(f"{volumeName},{labelName}")
            if pairsFolder and os.path.isdir(pairsFolder):
                volumes, labels = os.path.join(pairsFolder, "volumes"), os.path.join(pairsFolder, "labels")
                for volumePath, labelPath in pair_by_name(volumes, labels):
                    lines.append(f"{volumePath},{labelPath}")
            negativesDir = os.path.join(workDir, "without-infection")
            for index, volumeNode in enumerate(negativeVolumes):
                os.makedirs(negativesDir, exist_ok=True)
                self.exportVolume(volumeNode, os.path.join(negativesDir, f"ct{index}.nrrd"))
            if len(lines) == 1 and not negativeVolumes:
                raise ValueError("Add at least one training case (volume + segmentation) or CT without infection, or "
                                 "choose a folder of pairs with 'volumes' and 'labels' subfolders.")
            data = []
            if len(lines) > 1:
                pairsCsv = os.path.join(workDir, "pairs.csv")
                with open(pairsCsv, "w") as f:
                    f.write("\n".join(lines) + "\n")
                data += ["--pairs", pairsCsv]
            if negativeVolumes:
                data += ["--negative-volumes", negativesDir]
        except BaseException:
            shutil.rmtree(workDir, ignore_errors=True)
            raise
        args = [shutil.which("PythonSlicer") or sys.executable, "-m", "LightSegLib", "finetune", "--base", baseModel,
                "--name", newName, *data, "--minutes", str(minutes), "--progress-json", "--force",
                "--adapt", "all" if adaptAllLayers else "input"]
        return args, workDir

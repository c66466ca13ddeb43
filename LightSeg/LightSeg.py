"""LightSeg: COVID-19 lung infection segmentation on chest CT (3D Slicer scripted module).

Thin adapters only: every computation is a call into LightSegLib (installed beside this file). The Widget binds the
.ui to a parameter node; the Logic converts between MRML nodes and LightSegLib's SimpleITK/numpy objects.
"""

import json
import logging
import os
import shutil
import sys
import tempfile

import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)  # LightSegLib and Resources are installed beside this file


class LightSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LightSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LightSeg developers"]
        self.parent.helpText = (
            "Segments COVID-19 lung infection on chest CT with MiniSeg (82,666 parameters) and reports the infection "
            "volume and the percent of each lung involved. The Retrain panel fine-tunes a model on your own corrected "
            "segmentations, on this computer.")
        self.parent.acknowledgementText = (
            "Sample CT: COVID-CT-MD (Afshar et al., Scientific Data 2021). Training slices: COVID-SemiSeg (Fan et al., "
            "IEEE TMI 2020). MiniSeg: Qiu et al., AAAI 2021.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The bundled sample CT in the Sample Data module (category LightSeg), loaded from this extension's files."""
    import SampleData

    from LightSegLib.cards import sha256_of
    from LightSegLib.sample import sample_path

    path = str(sample_path())
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="LightSeg", sampleName="COVID-19 chest CT (P001)",
        thumbnailFileName=os.path.join(MODULE_DIR, "Resources", "Icons", "SampleP001.png"),
        uris=qt.QUrl.fromLocalFile(path).toString(), fileNames="P001-chest.nrrd", nodeNames="P001-chest",
        checksums=f"SHA256:{sha256_of(path)}", loadFileType="VolumeFile")


@parameterNodeWrapper
class LightSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    showSurface: bool = False
    trainingVolume: vtkMRMLScalarVolumeNode
    newModelName: str = "site-model"
    minutes: float = 5.0
    adaptAllLayers: bool = False


class LightSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelRequested = False
        self._running = False
        self._finetune = None
        self._lastReportRows = []

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LightSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = LightSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.copyResultsButton.connect("clicked(bool)", self.onCopyResults)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.updateDiagnostics)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.updateModelTooltip)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.removePairButton.connect("clicked(bool)", self.onRemovePair)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetuneButton)
        self.ui.deviceSelector.addItems(["auto", "cpu", "cuda"])
        self.refreshModels()
        self.updateDiagnostics()
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        if self._finetune:
            self._finetune.stop()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # widgets with a "SlicerParameterName" property in the .ui file are bound here
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    def updateButtons(self, caller=None, event=None):
        if self._running:
            self.ui.segmentButton.text = "Cancel"
            self.ui.segmentButton.enabled = True
        else:
            self.ui.segmentButton.text = "Segment infection"
            self.ui.segmentButton.enabled = bool(self._parameterNode and self._parameterNode.inputVolume)

    def refreshModels(self, select=None):
        entries = self.logic.models()
        for combo in (self.ui.modelSelector, self.ui.baseModelSelector):
            current = select or combo.currentText
            combo.clear()
            for entry in entries:
                combo.addItem(entry["id"])
                combo.setItemData(combo.count - 1, entry["tooltip"], qt.Qt.ToolTipRole)
            index = combo.findText(current) if current else -1
            combo.currentIndex = index if index >= 0 else 0
        self.updateModelTooltip()

    def updateModelTooltip(self, index=None):
        self.ui.modelSelector.toolTip = self.ui.modelSelector.itemData(self.ui.modelSelector.currentIndex,
                                                                      qt.Qt.ToolTipRole) or ""

    def updateDiagnostics(self, index=None):
        self.ui.gpuDiagnosticsLabel.text = self.logic.diagnosticsText()

    def onSegmentButton(self):
        if self._running:
            self._cancelRequested = True
            self.ui.statusLabel.text = "Cancelling after the current batch..."
            return
        if not self.logic.ensureDependencies():
            return
        self._running, self._cancelRequested = True, False
        self.updateButtons()
        self.ui.progressBar.value = 0
        try:
            with slicer.util.tryWithErrorDisplay("LightSeg could not segment this volume.", waitCursor=True):
                segmentationNode = self._parameterNode.outputSegmentation
                if not segmentationNode:
                    segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
                        "vtkMRMLSegmentationNode", self._parameterNode.inputVolume.GetName() + " infection")
                    self._parameterNode.outputSegmentation = segmentationNode
                report = self.logic.segment(self._parameterNode.inputVolume, segmentationNode,
                                            self.ui.modelSelector.currentText, self.ui.deviceSelector.currentText,
                                            progress=self.onProgress, cancel=lambda: self._cancelRequested)
                if report is None:
                    self.ui.statusLabel.text = "Cancelled."
                else:
                    tableNode = self.logic.showResults(report, segmentationNode, self._parameterNode.showSurface)
                    self.ui.resultsTableView.setMRMLTableNode(tableNode)
                    self._lastReportRows = self.logic.reportRows(report)
                    self.ui.statusLabel.text = f"Done in {report['timings_s']['total']:.1f} s on {report['device']}."
        finally:
            self._running = False
            self.updateButtons()

    def onProgress(self, done, total):
        self.ui.progressBar.maximum = total
        self.ui.progressBar.value = done
        self.ui.statusLabel.text = f"Segmenting: {done} of {total} slices with lung"
        slicer.app.processEvents()  # keeps the GUI responsive and lets Cancel be clicked between batches

    def onCopyResults(self):
        if self._lastReportRows:
            qt.QApplication.clipboard().setText(self.logic.rowsAsText(self._lastReportRows))

    def onAddPair(self):
        volume = self._parameterNode.trainingVolume
        segmentation = self.ui.trainingSegmentSelector.currentNode()
        segmentId = self.ui.trainingSegmentSelector.currentSegmentID()
        if not (volume and segmentation and segmentId):
            slicer.util.errorDisplay("Select a volume, a segmentation and its infection segment first.")
            return
        item = qt.QListWidgetItem(f"{volume.GetName()} + {segmentation.GetName()} / {segmentId}")
        item.setData(qt.Qt.UserRole, json.dumps([volume.GetID(), segmentation.GetID(), segmentId]))
        self.ui.trainingPairsList.addItem(item)

    def onRemovePair(self):
        for item in self.ui.trainingPairsList.selectedItems():
            self.ui.trainingPairsList.takeItem(self.ui.trainingPairsList.row(item))

    def onFinetuneButton(self):
        if self._finetune:
            self.ui.finetuneStatusLabel.text = "Stopping (the best model so far is kept)..."
            self._finetune.stop()
            return
        pairs = [json.loads(self.ui.trainingPairsList.item(i).data(qt.Qt.UserRole))
                 for i in range(self.ui.trainingPairsList.count)]
        folder = self.ui.pairsFolderLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay("Fine-tuning could not start.", waitCursor=True):
            self._finetune = self.logic.startFinetune(
                [(slicer.mrmlScene.GetNodeByID(v), slicer.mrmlScene.GetNodeByID(s), seg) for v, s, seg in pairs],
                folder, self.ui.baseModelSelector.currentText, self._parameterNode.newModelName,
                self._parameterNode.minutes, self.onFinetuneEvent, self._parameterNode.adaptAllLayers)
            self.ui.finetuneButton.text = "Stop"

    def onFinetuneEvent(self, event):
        if event.get("event") == "epoch":
            self.ui.finetuneProgressBar.maximum = event["epochs"]
            self.ui.finetuneProgressBar.value = event["epoch"]
            self.ui.finetuneStatusLabel.text = (f"Epoch {event['epoch']}: loss {event['loss']:.3f}, held-out Dice "
                                                f"{event['val_infnet_dice']:.3f}, about {event['eta_s']:.0f} s left")
        elif event.get("event") in ("done", "failed"):
            self._finetune = None
            self.ui.finetuneButton.text = "Fine-tune"
            if event["event"] == "done":
                self.refreshModels(select=event["model"])
                self.ui.finetuneResultLabel.text = (
                    f"{event['model']}: held-out Dice {event['new'].get('infnet_dice', 0):.3f} "
                    f"(parent {event['parent']['infnet_dice']:.3f}) on {event['held_out_slices']} slices; "
                    f"{event['stopped']} after {event['epochs']} epochs")
            else:
                self.ui.finetuneResultLabel.text = event.get("message", "Fine-tuning failed.")


class FinetuneProcess:
    """``lightseg finetune --progress-json`` in Slicer's Python, outside the GUI process; Stop = stop file, then kill.

    A reader thread queues the process's output lines; a timer in the GUI thread hands them to ``onEvent``, so the
    GUI never waits on the pipe.
    """

    def __init__(self, args, workDir, onEvent):
        import queue
        import threading

        self.workDir = workDir
        self.stopFile = os.path.join(workDir, "STOP")
        self.onEvent = onEvent
        self.lines = queue.Queue()
        self.lastText = ""
        self.killDeadline = None
        self.process = slicer.util.launchConsoleProcess(args + ["--stop-file", self.stopFile], cwd=MODULE_DIR)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.timer = qt.QTimer()
        self.timer.setInterval(300)
        self.timer.connect("timeout()", self.poll)
        self.timer.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)

    def poll(self):
        while not self.lines.empty():
            text = self.lines.get().strip()
            if not text:
                continue
            try:
                self.onEvent(json.loads(text))
            except ValueError:
                self.lastText = text
                logging.info(text)
        if self.killDeadline is not None and qt.QDateTime.currentMSecsSinceEpoch() > self.killDeadline:
            self.process.kill()
        if self.process.poll() is not None and not self.reader.is_alive() and self.lines.empty():
            self.timer.stop()
            if self.process.returncode != 0:
                self.onEvent({"event": "failed",
                              "message": self.lastText or f"fine-tuning exited with code {self.process.returncode}"})
            shutil.rmtree(self.workDir, ignore_errors=True)  # the site data written for the run

    @property
    def finished(self):
        return not self.timer.isActive()

    def stop(self):
        open(self.stopFile, "w").close()
        self.killDeadline = qt.QDateTime.currentMSecsSinceEpoch() + 60_000


class LightSegLogic(ScriptedLoadableModuleLogic):
    """MRML <-> LightSegLib. No segmentation logic lives here: it is all in LightSegLib."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._segmenters = {}

    def getParameterNode(self):
        return LightSegParameterNode(super().getParameterNode())

    # LightSegLib's pure-Python needs beyond what Slicer ships; SimpleITK, numpy and VTK are Slicer's own and are never
    # installed or upgraded by LightSeg
    EXTRA_PACKAGES = {"scipy": "scipy", "slicerio": "slicerio", "tqdm": "tqdm", "PIL": "pillow"}

    def ensureDependencies(self):
        """Ask before installing anything: torch through the PyTorch extension, then the small extras with pip."""
        import importlib.util

        if not self.ensureTorch():
            return False
        missing = [pkg for module, pkg in self.EXTRA_PACKAGES.items() if importlib.util.find_spec(module) is None]
        if missing:
            if not slicer.util.confirmOkCancelDisplay(
                    f"LightSeg needs these Python packages: {', '.join(missing)}. Install them now with pip? "
                    "(Slicer's own SimpleITK, numpy and VTK are not touched.)"):
                return False
            slicer.util.pip_install(" ".join(missing))
        return True

    @staticmethod
    def ensureTorch():
        """torch through the PyTorch extension, after asking; never pip over Slicer's own packages."""
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay("LightSeg needs the PyTorch extension: install it from the Extensions Manager.")
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if not slicer.util.confirmOkCancelDisplay(
                    "LightSeg needs PyTorch (the 'torch' package, about 200 MB for the CPU build). Install it now "
                    "through the PyTorch extension? Slicer may need a restart afterwards."):
                return False
            if torchLogic.installTorch(askConfirmation=False) is None:
                slicer.util.errorDisplay("PyTorch could not be installed; see the Python console.")
                return False
        return True

    def models(self):
        from LightSegLib import registry

        return [{"id": e.card.id, "tooltip": self._cardTooltip(e.card, e.bundled)} for e in registry.list_models()]

    @staticmethod
    def _cardTooltip(card, bundled):
        from LightSegLib.cards import validation_summary

        lines = [f"{card.id} {card.version} ({'bundled' if bundled else 'your model'})",
                 f"{card.architecture}, {card.parameters:,} parameters", card.description,
                 f"validation: {validation_summary(card)}",
                 f"test-time flips: {', '.join(card.test_time_flips) or 'none'}",
                 f"licence: {card.licence}"]
        if card.parent:
            lines.append(f"fine-tuned from {card.parent['id']}")
        return "\n".join(line for line in lines if line)

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
        from LightSegLib import registry
        from LightSegLib.engine import Segmenter

        key = (modelId, device)
        if key not in self._segmenters:
            self._segmenters[key] = Segmenter(registry.resolve(modelId), device)
        return self._segmenters[key]

    def segment(self, volumeNode, segmentationNode, modelId, device="auto", progress=None, cancel=None):
        """Segment ``volumeNode`` into ``segmentationNode`` ("Lungs", "Infection"); returns the report, or None
        if cancelled."""
        import SimpleITK as sitk

        from LightSegLib.engine import Cancelled
        from LightSegLib.report import build_report
        from LightSegLib.scene import image_from_ras_array, segment_specs

        ijkToRas = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(ijkToRas)
        image = image_from_ras_array(slicer.util.arrayFromVolume(volumeNode),
                                     slicer.util.arrayFromVTKMatrix(ijkToRas))
        segmenter = self._segmenter(modelId, device)
        try:
            result = segmenter.segment_volume(image, progress, cancel)
        except Cancelled:
            return None
        labels = sitk.GetArrayViewFromImage(result.labels)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentation = segmentationNode.GetSegmentation()
        for spec in segment_specs():
            segmentId = segmentation.GetSegmentIdBySegmentName(spec["name"])
            if not segmentId:
                segmentId = segmentation.AddEmptySegment(spec["id"], spec["name"], spec["color"])
            segment = segmentation.GetSegment(segmentId)
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec["terminology"])
            mask = np.isin(labels, spec["labels"]).astype(np.uint8)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, volumeNode)
        self._placeUnderStudy(volumeNode, segmentationNode)
        return build_report(result, segmenter.card, str(segmenter.device), volumeNode.GetName())

    @staticmethod
    def _placeUnderStudy(volumeNode, segmentationNode):
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        studyItem = shNode.GetItemParent(shNode.GetItemByDataNode(volumeNode))
        if studyItem:
            shNode.SetItemParent(shNode.GetItemByDataNode(segmentationNode), studyItem)

    @staticmethod
    def reportRows(report):
        from LightSegLib.scene import results_rows

        return results_rows(report)

    @staticmethod
    def rowsAsText(rows):
        from LightSegLib.scene import rows_as_tsv

        return rows_as_tsv(rows)

    def showResults(self, report, segmentationNode, showSurface=False):
        """Fill (or create) the results table node; show the 3D surface when asked."""
        tableNode = slicer.mrmlScene.GetFirstNodeByName("LightSeg results")
        if not tableNode:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "LightSeg results")
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

    def startFinetune(self, scenePairs, pairsFolder, baseModel, newName, minutes, onEvent, adaptAllLayers=False):
        """Write the scene's training pairs to a temporary folder and run ``lightseg finetune`` on them
        (``--adapt all`` when ``adaptAllLayers``, else the default: the input stages only)."""
        workDir = tempfile.mkdtemp(prefix="lightseg-finetune-")
        lines = ["volume,label"]
        for index, (volumeNode, segmentationNode, segmentId) in enumerate(scenePairs):
            volumePath = os.path.join(workDir, f"case{index}.nrrd")
            labelPath = os.path.join(workDir, f"case{index}.seg.nrrd")
            slicer.util.saveNode(volumeNode, volumePath)
            exported = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            try:
                exported.GetSegmentation().CopySegmentFromSegmentation(segmentationNode.GetSegmentation(), segmentId)
                exported.GetSegmentation().GetSegment(segmentId).SetName("Infection")
                slicer.util.saveNode(exported, labelPath)
            finally:
                slicer.mrmlScene.RemoveNode(exported)
            lines.append(f"{os.path.basename(volumePath)},{os.path.basename(labelPath)}")
        if pairsFolder and os.path.isdir(pairsFolder):
            volumes, labels = os.path.join(pairsFolder, "volumes"), os.path.join(pairsFolder, "labels")
            from LightSegLib.io import pair_by_name

            for volumePath, labelPath in pair_by_name(volumes, labels):
                lines.append(f"{volumePath},{labelPath}")
        if len(lines) == 1:
            raise ValueError("Add at least one training case (volume + segmentation), or choose a folder of pairs "
                             "with 'volumes' and 'labels' subfolders.")
        pairsCsv = os.path.join(workDir, "pairs.csv")
        with open(pairsCsv, "w") as f:
            f.write("\n".join(lines) + "\n")
        args = [shutil.which("PythonSlicer") or sys.executable, "-m", "LightSegLib", "finetune", "--base", baseModel,
                "--name", newName, "--pairs", pairsCsv, "--minutes", str(minutes), "--progress-json", "--force",
                "--adapt", "all" if adaptAllLayers else "input"]
        return FinetuneProcess(args, workDir, onEvent)


class LightSegTest(ScriptedLoadableModuleTest):
    """Runs in Slicer, offline, on the bundled sample."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentSample()
        self.setUp()
        self.test_FlippedVolumeAgrees()
        self.setUp()
        self.test_FinetuneOneEpoch()

    def _loadSample(self):
        from LightSegLib.sample import sample_path

        return slicer.util.loadVolume(str(sample_path()))

    def test_SegmentSample(self):

        from LightSegLib import registry
        from LightSegLib.engine import Segmenter
        from LightSegLib.io import read_image
        from LightSegLib.report import volume_measurements
        from LightSegLib.sample import sample_path

        self.delayDisplay("Segmenting the bundled sample")
        volumeNode = self._loadSample()
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = LightSegLogic()
        report = logic.segment(volumeNode, segmentationNode, "miniseg-covid", "cpu")
        # geometry: the segmentation's labelmap lies on the volume's grid
        infectionId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName("Infection")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, infectionId, volumeNode)
        self.assertEqual(mask.shape, slicer.util.arrayFromVolume(volumeNode).shape)
        for name in ("Infection", "Lungs"):
            segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(name)
            segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
            tag = vtk.mutable("")
            self.assertTrue(segment.GetTag(segment.GetTerminologyEntryTagName(), tag))
            self.assertIn("SCT^", str(tag))
        # the same numbers as the library on the same file
        expected = volume_measurements(Segmenter(registry.resolve("miniseg-covid"), "cpu")
                                       .segment_volume(read_image(sample_path()).image))
        self.assertAlmostEqual(report["infection_ml"], expected["infection_ml"], delta=0.5)
        voxelMl = np.prod(volumeNode.GetSpacing()) / 1000
        self.assertAlmostEqual(mask.sum() * voxelMl, expected["infection_ml"], delta=0.5)
        tableNode = logic.showResults(report, segmentationNode)
        self.assertEqual(tableNode.GetNumberOfRows(), len(logic.reportRows(report)))
        self.delayDisplay("Sample segmented")

    def test_FlippedVolumeAgrees(self):
        self.delayDisplay("Segmenting a flipped, permuted copy")
        volumeNode = self._loadSample()
        logic = LightSegLogic()
        reference = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic.segment(volumeNode, reference, "miniseg-covid", "cpu")
        # the same voxels stored in another order: j and k swapped, then the new j reversed; the IJK-to-RAS
        # matrix changes with them so that every voxel keeps its physical position
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
        logic.segment(flipped, other, "miniseg-covid", "cpu")
        a = slicer.util.arrayFromSegmentBinaryLabelmap(reference, "Infection", volumeNode)
        b = slicer.util.arrayFromSegmentBinaryLabelmap(other, "Infection", volumeNode)
        self.assertTrue(np.array_equal(a > 0, b > 0))
        self.delayDisplay("Flipped copy agrees")

    def test_FinetuneOneEpoch(self):
        from LightSegLib import registry

        self.delayDisplay("Fine-tuning one epoch on the sample with a synthetic label")
        volumeNode = self._loadSample()
        array = slicer.util.arrayFromVolume(volumeNode)
        label = np.zeros(array.shape, np.uint8)
        label[20:50, array.shape[1] // 4: array.shape[1] // 2] = (
            (array[20:50, array.shape[1] // 4: array.shape[1] // 2] > -750)
            & (array[20:50, array.shape[1] // 4: array.shape[1] // 2] < -300))
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("Infection", "Infection")
        slicer.util.updateSegmentBinaryLabelmapFromArray(label, segmentationNode, segmentId, volumeNode)
        name = "selftest-finetune"
        events = []
        process = LightSegLogic().startFinetune([(volumeNode, segmentationNode, segmentId)], "", "miniseg-covid",
                                                name, 0.2, events.append)
        while not process.finished:
            slicer.app.processEvents()
            process.poll()
        self.assertTrue(any(e.get("event") == "done" for e in events), events)
        self.assertIn(name, [e.card.id for e in registry.list_models()])
        registry.remove_user_model(name)
        self.delayDisplay("Fine-tuned model appeared")

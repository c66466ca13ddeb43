"""LightSeg: COVID-19 lung infection segmentation on chest CT (3D Slicer scripted module).

The parts that need the Slicer application: the Module, a thin Widget (the .ui bound to a parameter node), the
console process of the retrain panel and the self-test wrapper. Everything between MRML nodes and LightSegLib is in
``LightSegLogic.py`` (no Qt), and the self-test cases are in ``LightSegSelfTests.py``; both also run on Slicer's core
libraries in ``make test``.
"""

import json
import os

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from LightSegAppTools import FinetuneProcess, ensureDependencies
from LightSegLogic import MODULE_DIR, LightSegCoreLogic


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
        self.ui.saveReportPageButton.connect("clicked(bool)", self.onSaveReportPage)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.updateDiagnostics)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.updateModelTooltip)
        self.ui.compileButton.connect("clicked(bool)", self.onCompileButton)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.addNegativeButton.connect("clicked(bool)", self.onAddNegative)
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

    def onCompileButton(self):
        if not ensureDependencies():
            return
        modelId = self.ui.modelSelector.currentText
        self.ui.statusLabel.text = f"Compiling {modelId} for this computer (under a minute per network)..."
        slicer.app.processEvents()
        with slicer.util.tryWithErrorDisplay("LightSeg could not compile this model.", waitCursor=True):
            paths = self.logic.compileModel(modelId)
            self.ui.statusLabel.text = f"{modelId}: {len(paths)} network(s) compiled for this computer."
            self.refreshModels(select=modelId)

    def onSegmentButton(self):
        if self._running:
            self._cancelRequested = True
            self.ui.statusLabel.text = "Cancelling after the current batch..."
            return
        if not ensureDependencies():
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

    def onSaveReportPage(self):
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Save the one-page report",
                                              "LightSeg report.pdf", "PDF (*.pdf)")
        if path:
            with slicer.util.tryWithErrorDisplay("LightSeg could not write the report page.", waitCursor=True):
                self.logic.saveReportPage(path)

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

    def onAddNegative(self):
        volume = self._parameterNode.trainingVolume
        if not volume:
            slicer.util.errorDisplay("Select a CT volume first.")
            return
        item = qt.QListWidgetItem(f"{volume.GetName()} (without infection)")
        item.setData(qt.Qt.UserRole, json.dumps([volume.GetID(), None, None]))
        self.ui.trainingPairsList.addItem(item)

    def onRemovePair(self):
        for item in self.ui.trainingPairsList.selectedItems():
            self.ui.trainingPairsList.takeItem(self.ui.trainingPairsList.row(item))

    def onFinetuneButton(self):
        if self._finetune:
            self.ui.finetuneStatusLabel.text = "Stopping (the best model so far is kept)..."
            self._finetune.stop()
            return
        items = [json.loads(self.ui.trainingPairsList.item(i).data(qt.Qt.UserRole))
                 for i in range(self.ui.trainingPairsList.count)]
        node = slicer.mrmlScene.GetNodeByID
        pairs = [(node(v), node(s), seg) for v, s, seg in items if s]
        negatives = [node(v) for v, s, _ in items if not s]
        folder = self.ui.pairsFolderLineEdit.currentPath
        with slicer.util.tryWithErrorDisplay("Fine-tuning could not start.", waitCursor=True):
            self._finetune = self.logic.startFinetune(
                pairs, folder, self.ui.baseModelSelector.currentText, self._parameterNode.newModelName,
                self._parameterNode.minutes, self.onFinetuneEvent, self._parameterNode.adaptAllLayers, negatives)
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
                    f"{event['model']}: {self.logic.heldOutText(event)}; {event['stopped']} after {event['epochs']} "
                    "epochs")
            else:
                self.ui.finetuneResultLabel.text = event.get("message", "Fine-tuning failed.")


class LightSegLogic(ScriptedLoadableModuleLogic, LightSegCoreLogic):
    """The Qt-free ``LightSegCoreLogic`` with the module's parameter node, and what needs the application
    (``LightSegAppTools``): installing dependencies, running the fine-tune in a console process."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        LightSegCoreLogic.__init__(self)

    def getParameterNode(self):
        return LightSegParameterNode(super().getParameterNode())

    def startFinetune(self, scenePairs, pairsFolder, baseModel, newName, minutes, onEvent, adaptAllLayers=False,
                      negativeVolumes=()):
        """Export the cases and run ``lightseg finetune`` in a console process (the panel's Stop writes its stop
        file); the exported cases are deleted when it ends."""
        args, workDir = self.prepareFinetune(scenePairs, pairsFolder, baseModel, newName, minutes, adaptAllLayers,
                                             negativeVolumes)
        return FinetuneProcess(args, workDir, onEvent)


class LightSegTest(ScriptedLoadableModuleTest):
    """Runs the self-test cases of LightSegSelfTests.py in Slicer, offline, on the bundled sample."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import LightSegSelfTests

        for case in LightSegSelfTests.SELF_TESTS:
            self.setUp()
            self.delayDisplay(case.__doc__.splitlines()[0])
            case()
        self.delayDisplay("LightSeg self-tests passed")

"""SpineSeg: vertebra segmentation in CT and disc labelling in MRI, as a 3D Slicer module.

This file stays thin: the module description, the panel, a logic that runs
the ``spineseg`` command line in a background process and turns its results
into nodes through ``SpineSegLib``, and the self-test. All computing lives in
the ``spineseg`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if MODULE_DIR not in sys.path:  # the spineseg core and SpineSegLib are installed beside this file
    sys.path.insert(0, MODULE_DIR)

from SpineSegLib import dependencies, handoff, logic, process  # noqa: E402  (no torch, no MRML work at import)
from spineseg import tasks  # noqa: E402
from spineseg.choices import DeviceChoice, Task  # noqa: E402

# Where the bundled models' measured figures are (README: Bundled models); the caveats come from the model cards.
MODELS_FIGURES_URL = "https://github.com/SpineSeg/SlicerSpineSeg#bundled-models"


def defaultModelCaveats() -> str:
    """The caveat of each task's default model, read from its card, for the help text."""
    return " ".join(f"{task.label()}: {logic.TaskLogic.modelCaveat('', task)}" for task in Task)


class SpineSeg(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineSeg project"]  # the same as EXTENSION_CONTRIBUTORS; no individual authors are recorded
        self.parent.helpText = f"""
Finds, outlines and names the vertebrae in a CT, and finds and names the intervertebral discs in an MRI.
<ol>
<li>Pick the <b>input volume</b> (CT for vertebrae; sagittal T1w or T2w MRI for discs) and the <b>task</b>.</li>
<li>Click <b>Segment vertebrae</b> or <b>Label discs</b>. The work runs in the background; Slicer stays usable and
the button turns into <b>Cancel</b>.</li>
<li>Vertebrae arrive as a segmentation with one named, coloured, SNOMED-CT coded segment per vertebra;
discs as a locked point list with one labelled point per disc (C2/C3 ... L5/S1).</li>
</ol>
On first use SpineSeg asks to install PyTorch (through the PyTorch extension) and a few small Python packages.
The same work runs without a window: see <code>SpineSegLib/batch.py</code>.
<p><b>Check every result.</b> {defaultModelCaveats()} See the measured figures in the
<a href="{MODELS_FIGURES_URL}">README</a>.</p>
"""
        self.parent.acknowledgementText = """
SpineSeg implements two published methods:
N. Lessmann, B. van Ginneken, P. A. de Jong, I. Isgum: "Iterative convolutional neural networks for automatic
vertebra identification and segmentation in CT images", MIDL 2018, and "Iterative fully convolutional neural
networks for automatic vertebra segmentation and identification", Medical Image Analysis 53 (2019).
R. Azad, L. Rouhier, J. Cohen-Adad: "Stacked hourglass network with a multi-level attention mechanism:
where to look for intervertebral disc labeling", MLMI workshop at MICCAI 2021.
Terminology codes from SNOMED CT via the DICOM standard.
"""
        slicer.app.connect("startupCompleted()", self.loadTerminology)

    def loadTerminology(self) -> None:
        """Register SpineSeg's terminology, so the Segment Editor lists its vertebrae and discs with their colours."""
        from SpineSegLib import terminology

        terminology.load_terminology(slicer.modules.terminologies.logic())


@parameterNodeWrapper
class SpineSegParameterNode:
    """Settings of the panel, saved with the scene.

    The task and device combo boxes are bound to the enums by connectGui; model
    is a bundled model's name or a manifest or weights path (empty: bundled
    model). The outputs are optional: None creates new nodes.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    task: Task = Task.VERTEBRAE
    model: str = ""
    device: DeviceChoice = DeviceChoice.AUTO
    show3D: bool = True
    smoothingFactor: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    minimumConfidence: Annotated[float, WithinRange(0.0, 1.0)] = 0.0
    keepTemporaryFiles: bool = False
    forceModality: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    outputMarkups: vtkMRMLMarkupsFiducialNode


class SpineSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: reads the parameter node, starts and cancels jobs, shows progress."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[SpineSegLogic] = None
        self._parameterNode: Optional[SpineSegParameterNode] = None
        self._parameterNodeGuiTag = None
        self._job: Optional[handoff.SlicerJob] = None
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onTimer)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.modelComboBox.activated.connect(self.onModelChosen)
        self.ui.modelBrowseButton.clicked.connect(self.onBrowseModel)
        self.ui.dicomFolderButton.clicked.connect(self.onChooseDicomFolder)
        self.ui.dicomLoadButton.clicked.connect(self.onLoadDicomSeries)
        self.ui.dicomLoadButton.enabled = False
        self._modelListTask = None
        self._dicomFolder = ""
        self.ui.progressBar.setVisible(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode: Optional[SpineSegParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        """Combo boxes, button text and enabled state follow the parameter node."""
        node = self._parameterNode
        if node is None:
            return
        task = node.task
        if self._modelListTask is not task:  # the list shows the task's bundled models, the default first
            self._modelListTask = task
            self.ui.modelComboBox.clear()
            for choice in self.logic.modelChoices(task):
                self.ui.modelComboBox.addItem(choice.text, choice.name)
        self.ui.modelCaveatLabel.text = self.logic.modelCaveat(node.model, task)
        panel = tasks.get(task).panel  # what the task's results become decides which options apply
        self.ui.outputSegmentationSelector.enabled = panel.output == "segmentation"
        self.ui.outputMarkupsSelector.enabled = panel.output == "markups"
        self.ui.minimumConfidenceSlider.enabled = panel.output == "markups"
        self.ui.smoothingFactorSlider.enabled = panel.output == "segmentation" and node.show3D
        if self._job is not None:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = panel.apply_text
            self.ui.applyButton.enabled = bool(node.inputVolume)
            self.ui.applyButton.toolTip = "Run the task in the background" if node.inputVolume else "Select an input volume"

    def onApplyButton(self) -> None:
        """Start a job, or cancel the running one."""
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = "Cancelling..."
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("SpineSeg could not start.", waitCursor=True):
            if not dependencies.install_missing(slicer.util.confirmOkCancelDisplay):
                self.ui.statusLabel.text = "Cancelled: the required Python packages are not installed."
                return
            self._job = self.logic.startTask(node.inputVolume, node.task, node.device, node.model, node.forceModality)
            logging.info("SpineSeg: running %s", " ".join(self._job.process.command))
            self.ui.logTextEdit.clear()
            self.ui.resultsLabel.text = ""
            self.ui.progressBar.value = 0
            self.ui.progressBar.setVisible(True)
            self.ui.statusLabel.text = "Starting..."
            self._timer.start()
        self.updateGUIFromParameterNode()

    def onTimer(self) -> None:
        """Poll the background process: show progress, and finish when it ends."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        for event in job.process.poll():
            if event.kind is process.EventKind.PROGRESS:
                self.ui.progressBar.value = int(round(100 * (event.fraction or 0.0)))
                if event.message != self.ui.statusLabel.text:
                    self.ui.logTextEdit.appendPlainText(event.message)
                self.ui.statusLabel.text = event.message
            elif event.kind in (process.EventKind.LOG, process.EventKind.ERROR_LOG):
                self.ui.logTextEdit.appendPlainText(event.message)  # warnings arrive here, one per line
                logging.info("SpineSeg: %s", event.message)
        if not job.process.finished:
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setVisible(False)
        try:
            self.onJobFinished(job)
        finally:
            if not self._parameterNode or not self._parameterNode.keepTemporaryFiles:
                job.remove_files()
            self.updateGUIFromParameterNode()

    def onJobFinished(self, job: handoff.SlicerJob) -> None:
        state = job.process.state
        if state is process.ProcessState.CANCELLED:
            self.ui.statusLabel.text = "Cancelled."
            return
        if state is process.ProcessState.FAILED:
            message = job.process.error_message
            logging.error("SpineSeg %s failed: %s\n%s", job.task, message, "\n".join(job.process.error_lines))
            self.ui.statusLabel.text = f"Failed: {message}"
            slicer.util.errorDisplay(f"SpineSeg {job.task} failed:\n{message}", detailedText="\n".join(job.process.error_lines))
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("SpineSeg could not load the results.", waitCursor=True):
            output = self.logic.importResults(
                job,
                outputSegmentation=node.outputSegmentation,
                outputMarkups=node.outputMarkups,
                show3D=node.show3D,
                smoothingFactor=node.smoothingFactor,
                minimumConfidence=node.minimumConfidence,
            )
            if handoff.panel_output(job.task) == "segmentation":
                node.outputSegmentation = output
                slicer.util.setSliceViewerLayers(background=job.input_node)
            else:
                node.outputMarkups = output
            summary = self.logic.runSummary(job)
            self.ui.statusLabel.text = self.logic.statusText(summary, job.seconds)
            self.ui.resultsLabel.text = f"{summary.headline()} ({job.seconds:.0f} s)"
            for line in summary.lines():
                self.ui.logTextEdit.appendPlainText(line)

    def onModelChosen(self, index: int) -> None:
        """A bundled model picked from the list becomes the model that runs."""
        self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def onBrowseModel(self) -> None:
        """Pick a model file of one's own (from spineseg train)."""
        path = qt.QFileDialog.getOpenFileName(self.parent, "SpineSeg model", "",
                                              "SpineSeg models (*.json *.safetensors)")
        if path:
            self._parameterNode.model = path

    def onChooseDicomFolder(self) -> None:
        """List the series of a DICOM folder, so that one of several can be loaded as the input."""
        from spineseg.io import list_dicom_series

        folder = qt.QFileDialog.getExistingDirectory(self.parent, "DICOM folder")
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay("SpineSeg could not read the DICOM folder.", waitCursor=True):
            self._dicomFolder = folder
            self.ui.dicomSeriesComboBox.clear()
            for series in list_dicom_series(folder):
                self.ui.dicomSeriesComboBox.addItem(str(series), series.uid)
        self.ui.dicomLoadButton.enabled = self.ui.dicomSeriesComboBox.count > 0

    def onLoadDicomSeries(self) -> None:
        """Load the chosen series and make it the input volume."""
        uid = self.ui.dicomSeriesComboBox.currentData
        with slicer.util.tryWithErrorDisplay("SpineSeg could not load the series.", waitCursor=True):
            self._parameterNode.inputVolume = self.logic.loadDicomSeries(self._dicomFolder, uid)


class SpineSegLogic(ScriptedLoadableModuleLogic, logic.TaskLogic):
    """Runs the tasks without the GUI (SpineSegLib.logic: background CLI process, then results -> nodes), plus
    the module's parameter node and Slicer's terminology."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        logic.TaskLogic.__init__(self)

    def getParameterNode(self):
        return SpineSegParameterNode(super().getParameterNode())

    def importResults(self, job: handoff.SlicerJob, **options):
        """Turn a finished job's files into nodes (see SpineSegLib.logic.TaskLogic.importResults)."""
        from SpineSegLib import terminology

        terminology.load_terminology(slicer.modules.terminologies.logic())  # also after a module reload
        return logic.TaskLogic.importResults(self, job, **options)

    def run(self, inputVolume, task: Task, device: DeviceChoice = DeviceChoice.AUTO, model: str = "",
            timeout: float = 1800.0, **importOptions):
        """Run a task to the end (for scripts and the self-test), keeping Slicer's events flowing."""
        job = self.startTask(inputVolume, task, device, model)
        try:
            self.waitForJob(job, timeout, keepAlive=slicer.app.processEvents)
            return self.importResults(job, **importOptions)
        finally:
            job.remove_files()


class SpineSegTest(ScriptedLoadableModuleTest):
    """Self-test: phantoms made on the fly (no downloads), both tasks through the logic.

    The phantoms are held out from training (seed 1000), small (a few seconds on a CPU) and lie where the
    bundled models name every level right, so a wrong name fails the test. The network runs are never
    skipped: they are the path a user's Apply button takes.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_glue_with_known_result()
        self.setUp()
        self.test_vertebrae_on_ct_phantom()
        self.setUp()
        self.test_discs_on_mri_phantom()

    def requireTorch(self) -> None:
        """The network runs need PyTorch: fail with the way to get it rather than skip (a skipped run let a
        crash in loading the results ship)."""
        if importlib.util.find_spec("torch") is None:
            raise RuntimeError("PyTorch is not installed: click Segment vertebrae once to install it (or install "
                               "the PyTorch extension), then run the self-test again")

    def test_glue_with_known_result(self) -> None:
        """A hand-made result becomes the expected segments and points (no network needed)."""
        import numpy as np
        from SpineSegLib import markups, scene, segmentations, volumes
        from spineseg.labels import vertebra_segment_name
        from spineseg.results import DiscRecord, DiscsResult, VertebraeResult
        from spineseg.volume import Volume, VolumeKind, affine_from_geometry

        affine = affine_from_geometry((0.8, 1.2, 2.0), (10.0, -5.0, 40.0), np.diag([-1.0, -1.0, 1.0]))
        image = Volume(np.zeros((24, 20, 16), np.int16), affine)
        labels = np.zeros(image.shape, np.uint8)
        labels[4:12, 4:14, 2:7], labels[4:12, 4:14, 9:14] = 21, 20
        context = scene.running_slicer_context()
        inputNode = volumes.node_from_volume(context.scene, image, "SelfTestCT")
        result = VertebraeResult(Volume(labels, affine, VolumeKind.LABEL), [])
        segmentationNode = segmentations.segmentation_from_result(context.scene, context.segmentations_logic, result, inputNode)
        names = {segmentationNode.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)}
        self.assertEqual(names, {vertebra_segment_name(20), vertebra_segment_name(21)})
        exported = segmentations.label_map_from_segmentation(context.scene, context.segmentations_logic, segmentationNode, inputNode)
        self.assertTrue(np.array_equal(exported.array, labels))
        discs = DiscsResult([DiscRecord(21, (1.0, 2.0, 3.0), 0.9)])
        pointList = markups.markups_from_discs(context.scene, discs, inputNode)
        self.assertEqual(pointList.GetNthControlPointLabel(0), "L1/L2")
        self.delayDisplay("Glue test passed")

    def test_vertebrae_on_ct_phantom(self) -> None:
        """T10-L3 come back as six segments with exactly those names and SpineSeg's terminology."""
        import numpy as np
        from SpineSegLib import volumes
        from spineseg.labels import TERMINOLOGY_CONTEXT, vertebra_segment_name
        from spineseg.phantoms.ct import make_ct_phantom

        self.requireTorch()
        phantom = make_ct_phantom(levels=[17, 18, 19, 20, 21, 22], spacing=(1.5, 1.5, 1.5), seed=1000)
        expected = [vertebra_segment_name(int(level)) for level in np.unique(phantom.labels.array) if level]
        inputNode = volumes.node_from_volume(slicer.mrmlScene, phantom.image, "SpineSegPhantomCT")
        self.delayDisplay("Segmenting vertebrae in a CT phantom (T10-L3)")
        segmentationNode = SpineSegLogic().run(inputNode, "vertebrae", device="cpu", show3D=False)
        segmentation = segmentationNode.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(sorted(names), sorted(expected))
        for index in range(segmentation.GetNumberOfSegments()):
            self.assertTrue(segmentation.GetNthSegment(index).GetTerminology().startswith(TERMINOLOGY_CONTEXT + "~"))
        self.delayDisplay("Vertebrae test passed")

    def test_discs_on_mri_phantom(self) -> None:
        """The discs T10/T11 ... L5/S1 come back in order, one point each, in a locked list."""
        from SpineSegLib import volumes
        from spineseg.labels import disc_name
        from spineseg.phantoms.mri import make_mri_phantom

        self.requireTorch()
        phantom = make_mri_phantom(contrast="T2", seed=1000)
        expected = [disc_name(number) for number in sorted(phantom.disc_points)]
        inputNode = volumes.node_from_volume(slicer.mrmlScene, phantom.image, "SpineSegPhantomMRI")
        self.delayDisplay("Labelling discs in an MRI phantom")
        pointList = SpineSegLogic().run(inputNode, "discs", device="cpu")
        labels = [pointList.GetNthControlPointLabel(i) for i in range(pointList.GetNumberOfControlPoints())]
        self.assertEqual(labels, expected)
        self.assertTrue(pointList.GetLocked())
        self.delayDisplay("Discs test passed")

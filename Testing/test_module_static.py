"""Static checks of the Slicer module (no Slicer, no Qt): widgets, parameters, CMake lists, resources."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "SpineSegExtension"
MODULE_FILE = EXTENSION / "SpineSeg.py"
UI_FILE = EXTENSION / "Resources" / "UI" / "SpineSeg.ui"


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).iter("widget")}


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def test_every_widget_the_module_uses_is_in_the_ui_file():
    used = {
        node.attr
        for node in ast.walk(module_tree())
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
    }
    assert used, "the module refers to no widgets"
    missing = used - set(ui_widgets())
    assert not missing, f"SpineSeg.py uses widgets missing from SpineSeg.ui: {sorted(missing)}"


def parameter_fields() -> dict[str, str]:
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {
                item.target.id: ast.unparse(item.annotation)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError("no @parameterNodeWrapper class in SpineSeg.py")


def test_ui_parameter_names_match_the_parameter_node():
    fields = parameter_fields()
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert set(bound.values()) <= set(fields), f"unknown parameters: {set(bound.values()) - set(fields)}"
    # every setting, the task and device combo boxes included, is bound by connectGui
    assert set(fields) == set(bound.values())
    assert (fields["task"], fields["device"]) == ("Task", "DeviceChoice")
    assert fields["outputSegmentation"] == "vtkMRMLSegmentationNode"
    assert fields["outputMarkups"] == "vtkMRMLMarkupsFiducialNode"


def test_output_selectors_create_new_nodes_by_default():
    widgets = ui_widgets()
    for name in ("outputSegmentationSelector", "outputMarkupsSelector"):
        props = {p.get("name"): p for p in widgets[name].findall("property")}
        assert props["noneEnabled"].find("bool").text == "true"
        assert props["addEnabled"].find("bool").text == "true"
        assert props["noneDisplay"].find("string").text.startswith("Create new")
    connections = ElementTree.parse(UI_FILE).findall(".//connection")
    receivers = {c.find("receiver").text for c in connections if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    assert {n for n, w in widgets.items() if w.get("class") == "qMRMLNodeComboBox"} <= receivers


def test_enum_combo_boxes_show_readable_labels():
    """connectGui fills the task and device combo boxes from the enums' labels, one item per member."""
    from spineseg.choices import DeviceChoice, Task

    assert [task.label() for task in Task] == ["Segment vertebrae (CT)", "Label discs (MRI)"]
    assert [device.label() for device in DeviceChoice] == ["Auto", "CPU", "GPU (CUDA)"]
    text = MODULE_FILE.read_text()
    assert "from spineseg.choices import DeviceChoice, Task" in text and "import torch" not in text


def test_module_has_the_four_classes_and_the_papers():
    tree = module_tree()
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"SpineSeg", "SpineSegWidget", "SpineSegLogic", "SpineSegTest", "SpineSegParameterNode"} <= classes
    text = MODULE_FILE.read_text()
    for phrase in ('"Segmentation"', "Lessmann", "MIDL 2018", "Medical Image Analysis", "Azad", "MLMI"):
        assert phrase in text
    assert "import *" not in text
    assert "slicer.mrmlScene" not in (EXTENSION / "SpineSegLib" / "segmentations.py").read_text()


def test_module_cmake_lists_every_python_file_and_resource():
    text = (EXTENSION / "CMakeLists.txt").read_text()
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = [r.replace("${MODULE_NAME}", "SpineSeg") for r in cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    listed = {s.replace("${MODULE_NAME}", "SpineSeg") for s in scripts}
    needed = {"SpineSeg.py"} | {
        str(p.relative_to(EXTENSION)) for p in (EXTENSION / "SpineSegLib").glob("*.py")
    }
    assert needed <= listed, f"not in MODULE_PYTHON_SCRIPTS: {sorted(needed - listed)}"
    for path in listed:
        assert (EXTENSION / path).is_file(), f"listed but missing: {path}"
    for path in resources:
        assert (EXTENSION / path).is_file(), f"listed resource missing: {path}"
    assert "Resources/UI/SpineSeg.ui" in resources and "Resources/Icons/SpineSeg.png" in resources
    # the core package and bundled models are globbed, then installed with the module
    assert "spineseg/*.py" in text and "GLOB_RECURSE SPINESEG_CORE_SCRIPTS" in text
    assert "spineseg/models/*" in text and "Resources/Models" not in text
    assert re.search(r"slicerMacroBuildScriptedModule\((.|\n)*WITH_GENERIC_TESTS", text)
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)


def test_only_the_module_file_is_a_top_level_script():
    """Slicer loads every top-level script as a module: the batch program must not be one."""
    text = (EXTENSION / "CMakeLists.txt").read_text()
    scripts = [s.replace("${MODULE_NAME}", "SpineSeg") for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    assert [s for s in scripts if "/" not in s] == ["SpineSeg.py"]
    assert "SpineSegLib/batch.py" in scripts
    assert not any("Batch" in s for s in scripts)
    assert sorted(p.name for p in EXTENSION.glob("*.py")) == ["SpineSeg.py"]


def test_module_loads_the_spineseg_terminology_at_startup_and_before_importing_results():
    text = MODULE_FILE.read_text()
    assert 'slicer.app.connect("startupCompleted()", self.loadTerminology)' in text
    assert text.count("terminology.load_terminology(slicer.modules.terminologies.logic())") == 2
    resources = cmake_list((EXTENSION / "CMakeLists.txt").read_text(), "MODULE_PYTHON_RESOURCES")
    assert "Resources/Terminology/SegmentationCategoryTypeModifier-SpineSeg.term.json" in resources


def module_constant(name: str) -> str:
    for node in module_tree().body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} is not defined in SpineSeg.py")


def test_help_and_status_read_the_caveat_from_the_model_cards_with_the_figures_link():
    """Every place a user meets a result says how far to trust the model that made it, from its card: no
    figures are written into the module, and naming a model (even the default) keeps the caveat."""
    url = module_constant("MODELS_FIGURES_URL")
    readme = (ROOT / "README.md").read_text()
    assert url.endswith("#bundled-models") and "\n## Bundled models\n" in readme
    text = MODULE_FILE.read_text()
    help_text = re.search(r'helpText = f"""(.*?)"""', text, re.S).group(1)
    assert "{defaultModelCaveats()}" in help_text and '<a href="{MODELS_FIGURES_URL}">' in help_text
    assert "self.ui.modelCaveatLabel.text = self.logic.modelCaveat(node.model, task)" in text
    assert "self.ui.statusLabel.text = self.logic.statusText(summary, job.seconds)" in text
    assert "if node.model else" not in text  # the caveat no longer depends on the model field being empty
    assert not re.search(r"\d+ of \d+|Dice 0\.\d", text), "figures belong in the model cards"
    description = re.search(r'set\(EXTENSION_DESCRIPTION "([^"]+)"\)', (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert "trained only on generated phantoms" in description and url in description


def test_self_test_asserts_true_names_and_runs_the_network():
    text = MODULE_FILE.read_text()
    assert "self.assertEqual(sorted(names), sorted(expected))" in text
    assert "self.assertEqual(labels, expected)" in text
    assert "validNames" not in text  # "any valid name" let an L1-L3 phantom named L2-L4 pass
    run_test = re.search(r"def runTest\(self\) -> None:(.*?)\n    def ", text, re.S).group(1)
    assert "test_vertebrae_on_ct_phantom()" in run_test and "test_discs_on_mri_phantom()" in run_test
    assert "return" not in run_test and "testingEnabled" not in text  # never skipped


def test_module_logic_is_the_glue_logic_the_tests_drive():
    """SpineSegLogic is SpineSegLib.logic.TaskLogic (tested on slicer-core) plus the parameter node."""
    text = MODULE_FILE.read_text()
    assert "class SpineSegLogic(ScriptedLoadableModuleLogic, logic.TaskLogic):" in text
    assert "inputVolume" not in re.search(r"def importResults.*?return", text, re.S).group(0)


def test_top_level_cmake_has_the_extension_metadata():
    text = (ROOT / "CMakeLists.txt").read_text()
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{variable} "[^"]+"\)', text), variable
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(SpineSegExtension)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text
    icon = re.search(r'EXTENSION_ICONURL ".*/main/(.*?)"', text).group(1)
    assert (ROOT / icon).is_file()


@pytest.mark.parametrize("path", ["SpineSegExtension/Resources/Icons/SpineSeg.png", "Resources/SpineSeg.png"])
def test_icons_are_png(path):
    assert (ROOT / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_glue_and_batch_never_use_the_global_scene():
    for path in (EXTENSION / "SpineSegLib").glob("*.py"):
        text = path.read_text()
        code = re.sub(r'""".*?"""', "", text, flags=re.S)
        assert "import qt" not in code and "import ctk" not in code, path.name
        uses = re.findall(r"slicer\.mrmlScene", code)
        if path.name == "scene.py":
            continue  # running_slicer_context hands the application's scene to the caller
        assert not uses, f"{path.name} reaches for slicer.mrmlScene"

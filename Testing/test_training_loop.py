"""The training loop: loss goes down, resume is exact, a killed checkpoint write is harmless,
the exported models load, and two gloo processes train together. Tiny networks, one thread."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spineseg.cli import main as cli_main
from spineseg.errors import CancelledError, InputError
from spineseg.model_store import load_model, load_state_dict
from spineseg.training import command, tasks, trainer
from spineseg.training.checkpoint import read_latest_checkpoint
from spineseg.training.config import load_config
from spineseg.training.datasets import read_dataset
from spineseg.training.tasks import discs as disc_training
from spineseg.training.tasks import vertebrae as vertebra_training
from spineseg.training.tasks.vertebrae import stack_patches
from spineseg.networks.vertebra_model import VertebraModel

TINY = {
    "vertebrae": ["model.filters=4", "sampler.patch_size=16", "model.spacing_mm=6", "data.phantoms=2",
                  "data.validation_phantoms=1", "validation.patches=8"],
    "discs": ["model.features=8", "model.depth=2", "model.input_size=64", "batch_size=2", "data.phantoms=2",
              "data.validation_phantoms=1"],
}


def tiny_config(task: str, *overrides: str):
    """A seconds-long run on one thread; intervals of 2 unless overridden."""
    common = ["threads=1", 'device="cpu"', "iterations=6", "log_interval=1", "checkpoint_interval=2",
              "validation.interval=2"]
    return load_config(task, None, [*common, *TINY[task], *overrides])


@pytest.fixture(autouse=True)
def one_thread_and_phantoms_made_once(monkeypatch):
    """Runs use one thread; phantoms are generated once per module (generation is deterministic)."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(vertebra_training, "phantom_cases", _made_once(vertebra_training.phantom_cases))
    monkeypatch.setattr(disc_training, "make_training_set", _made_once(disc_training.make_training_set))
    yield
    torch.set_num_threads(threads)


_PHANTOMS: dict = {}


def _made_once(generate):
    def cached(*args, **options):
        key = (generate.__name__, *args, *sorted(options.items()))
        if key not in _PHANTOMS:
            _PHANTOMS[key] = generate(*args, **options)
        return _PHANTOMS[key]

    return cached


def _held_out_loss(config, weights=None) -> float:
    """Loss on the fixed validation patches, for fresh weights (seeded as the trainer does) or given ones."""
    task = tasks.build_task(config, read_dataset(config.task, config.data, config.seed), 0)
    torch.manual_seed(config.seed)
    network = task.build_network().eval()
    if weights is not None:
        network.load_state_dict(weights)
    with torch.no_grad():
        return float(task.loss(network, stack_patches(task.validation_patches, torch.device("cpu")))[0])


def test_a_few_steps_on_phantoms_lower_the_loss(tmp_path):
    config = tiny_config("vertebrae", "iterations=40", "log_interval=5", "checkpoint_interval=20",
                         "validation.interval=20", "optimiser.learning_rate=0.003", 'schedule.kind="constant"',
                         "validation.scans=1")
    result = trainer.train(config, tmp_path / "run", show_progress=False)
    before = _held_out_loss(config)
    after = _held_out_loss(config, read_latest_checkpoint(tmp_path / "run" / "checkpoints").weights)
    assert after < 0.92 * before, (before, after)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,seconds,learning_rate,loss,mask,completeness,level,validation_score")
    assert rows[0].endswith("validation_scan_dice,validation_scan_identification")
    assert len(rows) == 1 + 8
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 10_000
    # The exported model is what `spineseg vertebrae --model PATH` loads.
    model = load_model("vertebrae", result.model.weights_path, "cpu")
    assert model.settings.patch_size == 16 and model.name == "vertebrae-model"
    manifest = result.model.manifest
    assert manifest["training"]["exported"].startswith("best validation score")
    assert set(manifest["scores"]["validation"]) >= {"score", "dice", "level_error", "scan_dice"}
    assert Path(manifest["training"]["run_config"]) == (tmp_path / "run" / "config.json").resolve()


def _cancel_after(iteration: int):
    def report(fraction: float, message: str) -> None:
        if message.startswith(f"iteration {iteration}/"):
            raise CancelledError("stopped by the test")

    return report


@pytest.mark.parametrize("task", ["vertebrae", "discs"])
def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, task):
    config = tiny_config(task)
    trainer.train(config, tmp_path / "straight", show_progress=False)
    with pytest.raises(CancelledError):  # stopped at iteration 3: the checkpoint of iteration 2 is kept
        trainer.train(config, tmp_path / "resumed", show_progress=False, progress=_cancel_after(3))
    assert read_latest_checkpoint(tmp_path / "resumed" / "checkpoints").iteration == 2
    trainer.train(config, tmp_path / "resumed", resume=True, show_progress=False)

    straight = read_latest_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed = read_latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert resumed.iteration == straight.iteration == 6
    for name, tensor in straight.weights.items():
        assert torch.equal(tensor, resumed.weights[name]), name
    losses = [[line.split(",")[3] for line in (tmp_path / run / "metrics.csv").read_text().splitlines()]
              for run in ("straight", "resumed")]
    assert losses[0] == losses[1] and len(losses[0]) == 7


def test_averaging_exports_the_mean_of_the_last_snapshots(tmp_path):
    config = tiny_config("discs", "iterations=4", "averaging.snapshots=2", "averaging.interval=1")
    result = trainer.train(config, tmp_path / "run", show_progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir()) == [
        "iter-0000003.safetensors", "iter-0000004.safetensors"]
    assert result.model.manifest["training"]["exported"].startswith("average of 2 snapshots")
    model = load_model("discs", result.model.weights_path, "cpu")  # what `spineseg discs --model PATH` loads
    assert model.settings.input_size == 64
    assert "label_accuracy" in result.scores


def test_run_from_initial_weights_starts_from_exactly_those_weights(tmp_path, monkeypatch):
    first = trainer.train(tiny_config("discs", "iterations=2"), tmp_path / "first", show_progress=False)
    given = first.model.manifest_path
    seen: list[dict[str, torch.Tensor]] = []
    loss = disc_training.DiscTask.loss

    def record_first_weights(self, network, batch):
        if not seen:
            seen.append({name: tensor.clone() for name, tensor in network.state_dict().items()})
        return loss(self, network, batch)

    monkeypatch.setattr(disc_training.DiscTask, "loss", record_first_weights)
    config = tiny_config("discs", "iterations=2", f"model.initial_weights={json.dumps(str(given))}")
    result = trainer.train(config, tmp_path / "second", show_progress=False)
    start = load_state_dict(first.model)
    assert seen[0].keys() == start.keys()
    for name, tensor in start.items():
        assert torch.equal(seen[0][name], tensor), name
    recorded = json.loads((tmp_path / "second" / "config.json").read_text())["model"]["initial_weights"]
    assert recorded == str(given)
    assert result.model.manifest["training"]["initial_weights"] == {
        "model": first.model.name, "file": first.model.weights_path.name, "sha256": first.model.manifest["sha256"]}
    # A network of another shape cannot start from them.
    with pytest.raises(InputError, match="initial_weights"):
        trainer.train(tiny_config("discs", "model.features=6", f"model.initial_weights={json.dumps(str(given))}"),
                      tmp_path / "third", show_progress=False)


_KILL_SECOND_CHECKPOINT = textwrap.dedent("""
    import os, signal, sys
    from spineseg.training import checkpoint, trainer
    from spineseg.training.config import config_from_dict
    import json, torch

    calls, save = [], torch.save
    def save_then_die(state, path):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: half a file, then the process is killed
            open(path, "wb").write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        save(state, path)

    checkpoint.torch.save = save_then_die
    trainer.train(config_from_dict(json.loads(sys.argv[1])), sys.argv[2], show_progress=False)
""")


def test_run_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    from spineseg.training.config import config_to_dict

    config = tiny_config("vertebrae")
    run = tmp_path / "run"
    process = subprocess.run([sys.executable, "-c", _KILL_SECOND_CHECKPOINT, json.dumps(config_to_dict(config)),
                              str(run)], capture_output=True, text=True, timeout=120)
    assert process.returncode == -9, process.stderr[-2000:]
    assert any(p.name.startswith(".partial-") for p in (run / "checkpoints").iterdir())
    assert read_latest_checkpoint(run / "checkpoints").iteration == 2
    trainer.train(config, run, resume=True, show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-0000006", "latest.json"]


def test_command_line_trains_and_refuses_misuse(tmp_path, capsys):
    run = tmp_path / "run"
    arguments = ["train", "vertebrae", "--data", "phantoms", "--out", str(run), "--name", "mine",
                 *[f"--set={item}" for item in ["threads=1", "iterations=2", "log_interval=1", "checkpoint_interval=1",
                                                "validation.interval=1", *TINY["vertebrae"]]]]
    assert cli_main(arguments) == 0
    assert str(run / "model" / "mine.safetensors") in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["name"] == "mine"

    assert cli_main(arguments) == 2  # the folder holds a run
    assert "--resume" in capsys.readouterr().err
    assert cli_main(["train", "vertebrae", "--out", str(run), "--resume", "--set", "iterations=9"]) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli_main(["train", "vertebrae", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r2")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "data folder not found" in error and "empty" in error


def test_module_entry_point_trains_without_the_cli(tmp_path, capsys):
    """``python -m spineseg.training`` (what torchrun starts) trains and fails as ``spineseg train`` does."""
    run = tmp_path / "run"
    arguments = ["vertebrae", "--data", "phantoms", "--out", str(run),
                 *[f"--set={item}" for item in ["threads=1", "iterations=2", "log_interval=1", "checkpoint_interval=1",
                                                "validation.interval=1", *TINY["vertebrae"]]]]
    assert command.main(arguments) == 0
    assert str(run / "model" / "run.safetensors") in capsys.readouterr().out  # the export is named after the run
    missing = tmp_path / "missing"
    process = subprocess.run([sys.executable, "-m", "spineseg.training", "vertebrae", "--out", str(missing), "--resume"],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 2
    assert process.stderr.strip() == f"spineseg: error: {missing} holds no run to resume (no config.json); start it without --resume"


def _train_rank(rank: int, port: int, run_dir: str, out: str) -> None:
    """One of two gloo processes (as torchrun would start them); saves the weights it ends with."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    parameters = []
    build = trainer.build_optimiser

    def keep_parameters(config, params):
        parameters.extend(params)
        return build(config, parameters)

    trainer.build_optimiser = keep_parameters
    trainer.train(tiny_config("vertebrae", "iterations=4"), run_dir, show_progress=False)
    torch.save([p.detach() for p in parameters], Path(out) / f"rank{rank}.pt")


def _refused_rank(rank: int, port: int, run_dir: str, out: str) -> None:
    """One of two processes started on a folder that already holds a run; writes the error it got."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        trainer.train(tiny_config("vertebrae", "iterations=4"), run_dir, show_progress=False)
    except InputError as error:
        (Path(out) / f"refused{rank}.txt").write_text(str(error))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_train_together(tmp_path):
    torch.multiprocessing.spawn(_train_rank, args=(_free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    state = read_latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert state.iteration == 4 and len(state.numpy_rng) == 2
    assert state.numpy_rng[0] != state.numpy_rng[1]  # each process drew its own patches
    assert "2 process(es)" in json.loads((tmp_path / "run" / "model" / "vertebrae-model.json").read_text())[
        "training"]["hardware"]
    with pytest.raises(InputError, match="same number"):  # resuming needs as many processes
        trainer.train(tiny_config("vertebrae", "iterations=4"), tmp_path / "run", resume=True, show_progress=False)
    # A second start on the same folder: the first process's refusal reaches both, with no timeout wait.
    torch.multiprocessing.spawn(_refused_rank, args=(_free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert "already holds a run" in (tmp_path / f"refused{rank}.txt").read_text()


def _bundled_vertebra_task(validation_scans: int):
    """The vertebra task at the bundled model's geometry, validating on one T5-L4 phantom (3 mm)."""
    from spineseg.phantoms.ct import make_ct_phantom
    from spineseg.training.vertebra_sampler import TrainingCase

    config = load_config("vertebrae", None, ['device="cpu"', "validation.patches=8", f"validation.scans={validation_scans}"])
    phantom = make_ct_phantom(list(range(12, 24)), spacing=(3.0, 3.0, 3.0), seed=2024)
    case = TrainingCase.from_hounsfield(phantom.image.array, phantom.labels.array, 3.0)
    task = vertebra_training.VertebraTask(config, [case], [case], np.random.default_rng(0), "one phantom")
    network = task.build_network()
    network.load_state_dict(load_model("vertebrae", None, "cpu").network.state_dict())
    return task, network


def test_whole_scan_validation_scores_what_the_pipeline_delivers():
    """With validation.scans, the score is the level-matched Dice of whole validation scans walked and named
    by the inference code: the bundled model outlines and names a T5-L4 phantom; a net with its level head
    shifted by three levels loses its patch identification, but the walk's naming counts from the last rib
    (T12) in view, so the whole-scan score stays."""
    task, network = _bundled_vertebra_task(validation_scans=1)
    scores = task.validate(network, torch.device("cpu"))
    assert task.validation_metrics[-2:] == ("scan_dice", "scan_identification")
    assert scores["score"] == scores["scan_dice"] > 0.75 and scores["scan_identification"] >= 0.9
    with torch.no_grad():
        network.heads.level.bias += 3.0
    shifted = task.validate(network, torch.device("cpu"))
    assert shifted["dice"] == pytest.approx(scores["dice"]) and shifted["identification"] < 0.1
    assert shifted["scan_dice"] == pytest.approx(scores["scan_dice"], abs=0.02)


def test_a_run_folder_without_a_checkpoint_can_be_started_again(tmp_path, monkeypatch):
    """A start that failed on its data (or was killed early) is neither resumable nor in the way."""
    config, run = tiny_config("vertebrae", "iterations=2"), tmp_path / "run"
    build_task = trainer.build_task

    def labels_refused(*args):
        raise InputError("disc labels hold 3.4")

    monkeypatch.setattr(trainer, "build_task", labels_refused)
    with pytest.raises(InputError, match="3.4"):
        trainer.train(config, run, show_progress=False)
    assert not run.exists()  # a refused start leaves no folder that looks like a run
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="3.4"):
        trainer.train(config, run, show_progress=False)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]  # the user's folder as it was
    with pytest.raises(InputError, match="start the run without --resume"):
        trainer.train(config, run, resume=True, show_progress=False)
    monkeypatch.setattr(trainer, "build_task", build_task)
    trainer.train(config, run, show_progress=False)
    assert read_latest_checkpoint(run / "checkpoints").iteration == 2


def test_a_run_folder_in_use_is_refused(tmp_path):
    from spineseg.publish import lock_file

    (tmp_path / "run").mkdir()
    held = lock_file(tmp_path / "run" / trainer.RUN_LOCK)
    try:
        with pytest.raises(InputError, match="in use by another training"):
            trainer.train(tiny_config("vertebrae", "iterations=2"), tmp_path / "run", show_progress=False)
    finally:
        held.close()


class _NotATensor:
    """Stands for anything a pickle could smuggle into ``optimiser.pt``."""


@pytest.mark.parametrize("damage", ["optimiser.pt holds an object", "latest.json points outside the run"])
def test_a_hostile_checkpoint_is_refused_with_exit_3_and_one_line(tmp_path, capsys, damage):
    import shutil

    run = tmp_path / "run"
    trainer.train(tiny_config("vertebrae", "iterations=2"), run, show_progress=False)
    folder = run / "checkpoints" / "iter-0000002"
    if damage.startswith("optimiser"):
        torch.save({"optimiser": _NotATensor()}, folder / "optimiser.pt")
    else:
        shutil.copytree(folder, tmp_path / "elsewhere")
        (run / "checkpoints" / "latest.json").write_text(json.dumps({"iteration": 2, "folder": "../../elsewhere"}))
    capsys.readouterr()
    assert cli_main(["train", "vertebrae", "--out", str(run), "--resume"]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spineseg: model error: "), lines
    assert ("refused" in lines[0]) and "weights_only" not in lines[0]
    assert "Traceback" not in lines[0]


def test_ctrl_c_in_training_says_once_that_the_checkpoint_is_kept(tmp_path, monkeypatch, capsys):
    """The trainer's own line names what was kept; the CLI must not add 'no output was written'."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", interrupted)
    assert cli_main(["train", "vertebrae", "--data", "phantoms", "--out", str(tmp_path / "run")]) == 130
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "the last checkpoint" in error[0] and "--resume" in error[0], error

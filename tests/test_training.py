"""The training workflow: `axial-attention train|sample|complete|evaluate`, run files, resume, faults."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training import RunError, TrainConfig, train
from axial_attention.training.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--dim", "8", "--heads", "2", "--depth", "1", "--batch-size", "8", "--samples-per-row", "2", "--no-progress",
        "--device", "cpu"]
RUN_FILES = {"config.json", "model.safetensors", "training_state.pt", "metrics.jsonl", "curves.png", "samples.png",
             "results.json"}


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One tiny trained run on digits, shared by the read-only tests below."""
    out = tmp_path_factory.mktemp("run")
    assert cli(["train", *TINY, "--steps", "8", "--eval-every", "4", "--log-every", "2", "--checkpoint-every", "4",
                "--out", str(out)]) == 0
    return out


def state_of(folder: Path) -> dict:
    return torch.load(folder / "training_state.pt", weights_only=True)


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# -- the round trip ----------------------------------------------------------------------------------
def test_train_writes_every_run_file(run):
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished"
    assert results["test_bits_per_dim"] < results["uniform_bits_per_dim"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_bits_per_dim" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in records if "test_bits_per_dim" in r] == [4, 8]
    assert records[-1]["test_bits_per_dim"] == pytest.approx(results["test_bits_per_dim"])


def test_model_file_holds_the_ema_weights_and_loads_in_two_lines(run):
    model = AutoregressiveAxialTransformer.from_pretrained(run)
    state = state_of(run)
    assert_same_tensors(model.state_dict(), state["ema"]["average"])
    raw = state["model"]
    assert any(not torch.equal(raw[k], state["ema"]["average"][k]) for k in raw)  # EMA really differs from raw
    assert not model.training and model.config["dim"] == 8 and model.num_classes == 10


def test_evaluate_reports_the_runs_test_figure(run, capsys):
    assert cli(["evaluate", str(run), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    expected = json.loads((run / "results.json").read_text())["test_bits_per_dim"]
    assert f"test bits/dim: {expected:.4f}" in printed


def test_sample_and_complete_write_pngs_of_the_asked_layout(run, tmp_path):
    from PIL import Image

    assert cli(["sample", str(run), "--num", "6", "--labels", "3", "4", "--per-row", "3", "--temperature", "0.8",
                "--seed", "1", "--out", str(tmp_path / "s.png")]) == 0
    with Image.open(tmp_path / "s.png") as img:  # 2 rows x 3 tiles of 10x10 (8x8 + frame), scaled 8x
        assert img.size == (3 * 10 * 8, 2 * 10 * 8)
    assert cli(["complete", str(run), "--keep", "3", "--num", "4", "--samples", "2",
                "--out", str(tmp_path / "c.png")]) == 0
    with Image.open(tmp_path / "c.png") as img:  # per image: original, kept part, 2 completions
        assert img.size == (4 * 10 * 6, 4 * 10 * 6)
        grid = np.asarray(img)[::6, ::6]  # one pixel per cell
    tiles = grid.reshape(4, 10, 4, 10)[:, 1:-1, :, 1:-1].transpose(0, 2, 1, 3)  # (image, tile, 8, 8)
    for image in tiles:
        for tile in image[1:]:
            assert np.array_equal(tile[:3], image[0][:3])  # every tile keeps the first 3 rows
        assert not image[1][3:].any()  # the kept tile is blank below them


def test_python_api_trains_the_same_run_as_the_cli(tmp_path):
    args = dict(dim=8, heads=2, depth=1, batch_size=8, steps=3, samples_per_row=2, progress=False, device="cpu")
    results = train(TrainConfig(out=str(tmp_path / "py"), **args))
    assert cli(["train", *TINY, "--steps", "3", "--out", str(tmp_path / "cli")]) == 0
    from_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert results["test_bits_per_dim"] == from_cli["test_bits_per_dim"]
    assert_same_tensors(state_of(tmp_path / "py")["model"], state_of(tmp_path / "cli")["model"])


# -- resume, precision, accumulation ------------------------------------------------------------------
def test_a_killed_run_resumed_ends_with_the_same_weights(tmp_path, monkeypatch):
    steps = ["--steps", "7", "--checkpoint-every", "3", "--eval-every", "3", "--log-every", "1"]
    assert cli(["train", *TINY, *steps, "--out", str(tmp_path / "straight")]) == 0

    killed = tmp_path / "killed"
    real_step, calls = torch.optim.AdamW.step, []

    def dying_step(self, *args, **kwargs):  # the process dies during step 5, after the step-3 checkpoint
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        cli(["train", *TINY, *steps, "--out", str(killed)])
    monkeypatch.undo()
    assert state_of(killed)["step"] == 3
    assert cli(["train", *TINY, *steps, "--out", str(killed), "--resume"]) == 0
    expected, resumed = state_of(tmp_path / "straight"), state_of(killed)
    assert resumed["step"] == 7
    assert_same_tensors(expected["model"], resumed["model"])
    assert_same_tensors(expected["ema"]["average"], resumed["ema"]["average"])
    # the lines the killed run logged after its checkpoint are logged once, after the resume
    straight_lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    resumed_lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in straight_lines] == [json.loads(line)["step"] for line in resumed_lines]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(tmp_path, precision):
    results = train(TrainConfig(out=str(tmp_path), dim=8, heads=2, depth=1, batch_size=8, steps=4, samples_per_row=2,
                                progress=False, device="cpu", precision=precision))
    assert np.isfinite(results["test_bits_per_dim"])
    assert results["test_bits_per_dim"] < results["uniform_bits_per_dim"]


def test_gradient_accumulation_gives_the_same_step(tmp_path):
    """A batch in 2 micro-batches is the same optimiser step as in one (no dropout, so no masks differ)."""
    args = dict(dim=8, heads=2, depth=1, batch_size=8, steps=3, samples_per_row=2, progress=False, device="cpu",
                dropout=0.0, attn_dropout=0.0)
    train(TrainConfig(out=str(tmp_path / "one"), **args))
    train(TrainConfig(out=str(tmp_path / "two"), grad_accum=2, **args))
    one, two = state_of(tmp_path / "one")["model"], state_of(tmp_path / "two")["model"]
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(one[name], state_of(tmp_path / "one")["ema"]["average"][name]) for name in one)


@pytest.mark.slow
def test_compiled_training_takes_the_same_steps(tmp_path):
    """--compile (torch.compile, inductor's C++ backend on the CPU) trains the same weights as eager."""
    args = dict(dim=8, heads=2, depth=1, batch_size=8, steps=2, samples_per_row=2, progress=False, device="cpu",
                dropout=0.0, attn_dropout=0.0, ema=False)
    train(TrainConfig(out=str(tmp_path / "eager"), **args))
    train(TrainConfig(out=str(tmp_path / "compiled"), compile=True, **args))
    eager, compiled = state_of(tmp_path / "eager")["model"], state_of(tmp_path / "compiled")["model"]
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_training_runs_under_torchrun_with_two_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "examples" / "train_image_model.py"), *TINY, "--steps", "3", "--grad-accum", "2",
           "--out", str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test bits/dim" in result.stdout
    state = state_of(tmp_path)
    assert state["step"] == 3 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["cpu"], state["rng"][1]["cpu"])  # ranks draw different dropout masks
    assert RUN_FILES <= {p.name for p in tmp_path.iterdir()}


# -- bad input and faults: one line, exit status 2, nothing written is lost -----------------------------
def fails_with(capsys, argv, message, status=2):
    assert cli(argv) == status
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv,message", [
    (["train", "--device", "tpu"], "argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["train", "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["train", "--steps", "0"], "argument --steps: expected a positive integer, got 0"),
    (["sample", "run", "--num", "x"], "argument --num: expected a positive integer, got 'x'"),
])
def test_bad_flags_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["train", "--data", "no-such-folder"],
     "--data must be 'digits', 'moving-digits', 'moving-digit-frames', a folder of images or an existing .npy file"),
    (["train", "--batch-size", "6", "--grad-accum", "4"], "--batch-size (6) must be divisible"),
    (["train", "--ema-decay", "1.5"], "--ema-decay must be in [0, 1)"),
])
def test_bad_training_arguments_write_nothing(capsys, tmp_path, argv, message):
    fails_with(capsys, [argv[0], *TINY, *argv[1:], "--out", str(tmp_path / "new")], message)
    assert not (tmp_path / "new").exists()


def test_cuda_asked_where_there_is_none(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    fails_with(capsys, ["train", "--device", "cuda", "--out", str(tmp_path / "x")],
               "--device cuda: CUDA is not available")
    assert not (tmp_path / "x").exists()


def test_keep_out_of_range(run, capsys):
    fails_with(capsys, ["complete", str(run), "--keep", "9"], "--keep must be in [0, 8]")
    fails_with(capsys, ["complete", str(run), "--keep", "-1"], "--keep must be in [0, 8]")
    model = AutoregressiveAxialTransformer.from_pretrained(run)
    x = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"keep must be in \[0, 8\]"):
        model.complete(x, 9, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="keep must be >= 0"):
        model.complete(x, -1, torch.tensor([0, 1]))


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("config.json", "model.safetensors", "training_state.pt", "results.json"):
        (to / name).write_bytes((run / name).read_bytes())
    return to


def test_run_folder_without_model_files(capsys, tmp_path):
    fails_with(capsys, ["sample", str(tmp_path)], "config.json: no such file")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "AutoregressiveAxialTransformer",
                                                      "format_version": 1, "image_shape": [1, 2, 2]}))
    fails_with(capsys, ["evaluate", str(tmp_path)], "model.safetensors: no such file")


@pytest.mark.parametrize("change,message", [
    (lambda c: {**c, "model_type": "AxialResNet"}, "describes a model of type 'AxialResNet'"),
    (lambda c: {**c, "format_version": 7}, "format_version 7 is not one this package reads"),
    (lambda c: {**c, "colour": "blue"}, "does not match AutoregressiveAxialTransformer's arguments"),
    (lambda c: {**c, "dim": 12}, "does not fit the model in config.json"),
    (lambda c: {**c, "heads": 0}, "invalid arguments"),
])
def test_config_of_another_model_or_version(run, capsys, tmp_path, change, message):
    folder = copy_run(run, tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(change(config)))
    fails_with(capsys, ["sample", str(folder), "--num", "1"], message)


def test_truncated_model_file(run, capsys, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    fails_with(capsys, ["evaluate", str(folder)], "model.safetensors: not a readable safetensors file")


def test_truncated_training_state_is_refused_and_kept(run, capsys, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    data = (folder / "training_state.pt").read_bytes()
    (folder / "training_state.pt").write_bytes(data[: len(data) // 3])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fails_with(capsys, ["train", *TINY, "--steps", "8", "--out", str(folder), "--resume"],
               "training_state.pt: not a readable training state")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_existing_run_is_not_overwritten_without_asking(run, capsys, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fails_with(capsys, ["train", *TINY, "--steps", "2", "--out", str(folder)], "already holds a run")
    fails_with(capsys, ["train", *TINY, "--steps", "8", "--lr", "0.001", "--out", str(folder), "--resume"],
               "--lr 0.002 -> 0.001")
    fails_with(capsys, ["train", *TINY, "--steps", "7", "--out", str(folder), "--resume"],
               "is at step 8, past --steps 7")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_pos_emb_rotary_trains_saves_and_must_match_on_resume(tmp_path, capsys):
    out = tmp_path / "rotary"
    assert cli(["train", *TINY, "--steps", "2", "--pos-emb", "rotary", "--out", str(out)]) == 0
    model = AutoregressiveAxialTransformer.from_pretrained(out)
    assert model.config["pos_emb"] == "rotary" and not hasattr(model.pos_emb, "embedding")  # no learned grid
    assert json.loads((out / "results.json").read_text())["args"]["pos_emb"] == "rotary"
    fails_with(capsys, ["train", *TINY, "--steps", "4", "--out", str(out), "--resume"],
               "--pos-emb 'rotary' -> 'learned'")
    with pytest.raises(RunError, match="pos_emb must be one of 'learned', 'rotary', got 'sinusoidal'"):
        train(TrainConfig(steps=1, batch_size=8, dim=8, heads=2, depth=1, device="cpu", progress=False,
                          pos_emb="sinusoidal", out=str(tmp_path / "bad")))
    assert not (tmp_path / "bad").exists()


def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = AutoregressiveAxialTransformer.log_prob_tokens
    calls = []

    def exploding(self, tokens, labels=None, per_slice=False):  # training step 5's loss (evaluations not counted)
        result = real(self, tokens, labels, per_slice)
        if self.training:
            calls.append(1)
            if len(calls) == 5:
                return result * float("nan")
        return result

    monkeypatch.setattr(AutoregressiveAxialTransformer, "log_prob_tokens", exploding)
    fails_with(capsys, ["train", *TINY, "--steps", "6", "--checkpoint-every", "2", "--eval-every", "2",
                        "--out", str(out)], "training stopped at step 5: the loss is nan", status=1)
    state = state_of(out)
    assert state["step"] == 4
    model = AutoregressiveAxialTransformer.from_pretrained(out)
    assert_same_tensors(model.state_dict(), state["ema"]["average"])
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "stopped at step 5: non-finite loss" and "test_bits_per_dim" not in results


def test_an_unconditional_model_completes_and_scores_labelled_images(tmp_path, capsys):
    """Images that come with labels (digits) given to a model trained without them: labels are ignored."""
    array = np.random.default_rng(0).integers(0, 17, (40, 8, 8))
    np.save(tmp_path / "digits.npy", array)
    out = tmp_path / "run"
    assert cli(["train", *TINY, "--data", str(tmp_path / "digits.npy"), "--levels", "17", "--steps", "2",
                "--out", str(out)]) == 0
    assert AutoregressiveAxialTransformer.from_pretrained(out).num_classes is None
    assert cli(["complete", str(out), "--keep", "2", "--num", "3", "--images", "digits",
                "--out", str(tmp_path / "c.png")]) == 0
    assert cli(["evaluate", str(out), "--data", "digits"]) == 0
    assert "Traceback" not in capsys.readouterr().err

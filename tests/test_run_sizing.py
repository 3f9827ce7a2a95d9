"""Sizing a run to its data and machine (training/defaults.py): defaults chosen for the data, the memory
a step needs said and checked, activation checkpointing, and the per-frame figures of video runs."""
from __future__ import annotations

import json
import math

import pytest
import torch

from axial_attention import AutoregressiveAxialTransformer
from axial_attention.training import TrainConfig, train
from axial_attention.training import trainer as trainer_module
from axial_attention.training.cli import main as cli
from axial_attention.training.defaults import data_defaults, step_memory
from test_training import TINY, assert_same_tensors, state_of

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def test_the_digits_keep_the_tuned_main_job():
    config = TrainConfig().for_data((1, 8, 8))
    assert (config.batch_size, config.dim, config.depth, config.dropout, config.attn_dropout) == (32, 64, 4, 0.3, 0.3)
    assert config.past_window == 0


@pytest.mark.parametrize("image_shape,batch,dim,past_window", [
    ((1, 8, 16, 16), 8, 48, 5),   # moving digits: 2048 tokens a clip
    ((3, 32, 32), 4, 64, 0),      # 32x32x3 images: 3072 tokens
    ((3, 64, 64), 1, 64, 0),
    ((1, 3, 4, 4), 32, 64, 5),    # a small video keeps the small defaults, and still looks at its past
])
def test_larger_items_get_fused_attention_and_a_batch_of_at_most_16k_tokens(image_shape, batch, dim, past_window):
    chosen = data_defaults(image_shape)
    assert (chosen["batch_size"], chosen["dim"], chosen["past_window"]) == (batch, dim, past_window)
    if math.prod(image_shape) > 256:
        assert chosen["attn_dropout"] == 0 and chosen["depth"] == 2
        assert chosen["batch_size"] * math.prod(image_shape) <= 16384


def test_flags_given_win_over_the_data_defaults():
    config = TrainConfig(batch_size=3, attn_dropout=0.2, past_window=0).for_data((1, 8, 16, 16))
    assert (config.batch_size, config.attn_dropout, config.past_window, config.dim) == (3, 0.2, 0, 48)


def test_memory_estimate_follows_the_work_and_checkpointing_cuts_it():
    small = AutoregressiveAxialTransformer((1, 8, 16, 16), 17, dim=48, depth=2)
    with_past = AutoregressiveAxialTransformer((1, 8, 16, 16), 17, dim=48, depth=2, past_window=5)
    assert step_memory(small, 16) == 2 * step_memory(small, 8)
    assert step_memory(with_past, 8) > step_memory(small, 8)
    assert step_memory(small, 8, activation_checkpointing=True) < 0.3 * step_memory(small, 8)
    weights = AutoregressiveAxialTransformer((1, 8, 16, 16), 17, dim=48, depth=2, attn_dropout=0.1)
    assert step_memory(weights, 8) > step_memory(small, 8)


def test_a_run_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer_module, "available_memory", lambda device: 1000)  # bytes
    assert cli(["train", *TINY, "--steps", "1", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "a training step needs about" in err and "--activation-checkpointing" in err and "--grad-accum" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("window,message", [("4", "--past-window must be 0 (off) or odd"),
                                            ("-1", "--past-window must be 0 (off) or odd")])
def test_bad_past_window_is_named(tmp_path, capsys, window, message):
    assert cli(["train", *TINY, "--past-window", window, "--out", str(tmp_path / "new")]) == 2
    assert message in capsys.readouterr().err


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = AutoregressiveAxialTransformer((3, 4, 4), 8, dim=16, heads=2, depth=2, dropout=0.3, attn_dropout=0.2,
                                           past_window=3)
    x = torch.randint(0, 8, (4, 3, 4, 4))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.activation_checkpointing = checkpointing
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays them in the recomputation
        model.bits_per_dim(x).mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    assert_same_tensors(*grads)
    assert any(g.abs().sum() > 0 for g in grads[0].values())


def test_training_with_activation_checkpointing_takes_the_same_steps(tmp_path):
    args = dict(dim=8, heads=2, depth=1, batch_size=8, steps=2, samples_per_row=2, progress=False, device="cpu")
    train(TrainConfig(out=str(tmp_path / "plain"), **args))
    train(TrainConfig(out=str(tmp_path / "checkpointed"), activation_checkpointing=True, **args))
    assert_same_tensors(state_of(tmp_path / "plain")["model"], state_of(tmp_path / "checkpointed")["model"])


def test_a_run_saved_before_past_window_existed_resumes(tmp_path):
    args = dict(dim=8, heads=2, depth=1, batch_size=8, steps=2, samples_per_row=2, progress=False, device="cpu")
    train(TrainConfig(out=str(tmp_path), **args))
    state = state_of(tmp_path)
    del state["args"]["past_window"], state["args"]["past_slices"], state["args"]["warmup"]
    torch.save(state, tmp_path / "training_state.pt")
    assert train(TrainConfig(out=str(tmp_path), resume=True, **args))["status"] == "finished"


@pytest.mark.slow
def test_a_video_run_reports_the_bits_of_every_frame(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "video"
    assert cli(["train", "--data", "moving-digits", "--dim", "8", "--heads", "2", "--depth", "1", "--batch-size", "2",
                "--steps", "2", "--eval-every", "1", "--samples-per-row", "1", "--no-progress", "--device", "cpu",
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "memory: about" in printed and "test bits per frame:" in printed and "of frame 1's" in printed
    results = json.loads((out / "results.json").read_text())
    frames = results["test_bits_per_frame"]
    assert len(frames) == 8 and all(b > 0 for b in frames)
    assert sum(frames) / (8 * 16 * 16) == pytest.approx(results["test_bits_per_dim"])
    assert results["args"]["past_window"] == 5  # chosen for videos
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [len(r["test_bits_per_frame"]) for r in records if "test_bits_per_dim" in r] == [8, 8]
    with Image.open(out / "curves.png") as curves:  # two panels: bits/dim, and frame 1 against frames 2..8
        assert curves.size[0] > 1.5 * curves.size[1]
    assert cli(["evaluate", str(out)]) == 0
    assert "test bits per frame: " + ", ".join(f"{b:.1f}" for b in frames) in capsys.readouterr().out
    model = AutoregressiveAxialTransformer.from_pretrained(out)
    assert model.past is not None and model.past.window == 5

"""AutoregressiveAxialTransformer: exact normalisation, causality, cached sampling, bad input, the main job."""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from axial_attention import AutoregressiveAxialTransformer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def single_thread():
    """These models are tiny: a second thread only adds wake-up latency (badly so on shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(image_shape, levels, num_classes=None, depth=2, seed=0, std=0.3):
    """A small model with weights drawn large enough that every path (attention, context) matters:
    the default near-zero output projections would make a leak too small to see."""
    torch.manual_seed(seed)
    model = AutoregressiveAxialTransformer(image_shape, levels, dim=16, heads=2, depth=depth, num_classes=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


def all_images(image_shape, levels):
    n = math.prod(image_shape)
    return torch.tensor(list(itertools.product(range(levels), repeat=n))).reshape(-1, *image_shape)


def total_probability(model, image_shape, levels, label=None):
    x = all_images(image_shape, levels)
    labels = None if label is None else torch.full((len(x),), label)
    with torch.no_grad():
        return model.log_prob(x, labels).double().logsumexp(0).exp().item()


def raster_order(image_shape):
    """(channel, row, col) of every position in the model's order: raster over pixels, channels innermost."""
    channels, height, width = image_shape
    return [(c, i, j) for i in range(height) for j in range(width) for c in range(channels)]


# -- exact likelihood ------------------------------------------------------------------------------
@pytest.mark.parametrize("image_shape,levels", [((1, 2, 3), 3), ((2, 2, 2), 2), ((3, 1, 2), 3), ((1, 3, 2), 2)])
@pytest.mark.parametrize("num_classes,label", [(None, None), (3, 0), (3, 2)])
def test_probabilities_of_all_images_sum_to_one(image_shape, levels, num_classes, label):
    model = make_model(image_shape, levels, num_classes)
    assert total_probability(model, image_shape, levels, label) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("leak", ["unmasked column attention", "unmasked inner row attention"])
def test_normalisation_check_catches_a_leak_of_the_future(leak):
    """The check above is not vacuous: the leaks of a naive implementation break it."""
    image_shape, levels = (2, 2, 2), 2
    model = make_model(image_shape, levels)
    blocks = [column for _, column in model.outer] if leak.startswith("unmasked column") else list(model.inner)
    for block in blocks:
        block.attn.causal = False
    assert abs(total_probability(model, image_shape, levels) - 1.0) > 1e-3


def test_log_prob_matches_logits_and_bits_per_dim():
    model = make_model((2, 3, 2), 5, num_classes=4)
    x = torch.randint(0, 5, (3, 2, 3, 2))
    y = torch.tensor([0, 3, 1])
    logits = model(x, y)
    assert logits.shape == (3, 5, 2, 3, 2)
    log_probs = logits.log_softmax(1).gather(1, x[:, None]).squeeze(1)
    torch.testing.assert_close(model.log_prob(x, y), log_probs.sum((1, 2, 3)))
    torch.testing.assert_close(model.bits_per_dim(x, y), -log_probs.mean((1, 2, 3)) / math.log(2))


# -- causality over the model's order --------------------------------------------------------------
@pytest.mark.parametrize("image_shape,num_classes", [((1, 4, 5), None), ((3, 3, 4), None), ((2, 3, 3), 3)])
def test_logits_depend_only_on_earlier_positions(image_shape, num_classes):
    levels = 4
    model = make_model(image_shape, levels, num_classes)
    order = raster_order(image_shape)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, levels, (1, *image_shape), generator=gen)
    y = None if num_classes is None else torch.tensor([1])
    base = model(x, y)
    later_moved = 0
    for p, (c, i, j) in enumerate(order):
        changed = x.clone()
        for cc, ii, jj in order[p:]:  # change this position and everything after it
            changed[0, cc, ii, jj] = (x[0, cc, ii, jj] + 1 + torch.randint(0, levels - 1, (), generator=gen)) % levels
        out = model(changed, y)
        for cc, ii, jj in order[: p + 1]:
            torch.testing.assert_close(out[..., cc, ii, jj], base[..., cc, ii, jj], rtol=0, atol=1e-5)
        later_moved += sum(not torch.allclose(out[..., cc, ii, jj], base[..., cc, ii, jj]) for cc, ii, jj in order[p + 1 :])
    # ... and the test can fail: the model does use its past (through every path).
    assert later_moved == sum(range(len(order)))


def test_gradient_of_each_logit_reaches_exactly_the_past():
    """The embedding-level dependency matrix equals the strict lower triangle of the model's order."""
    image_shape, levels = (2, 3, 3), 3
    model = make_model(image_shape, levels)
    order = raster_order(image_shape)
    x = torch.randint(0, levels, (1, *image_shape))
    embedded = []

    def keep_grad(module, inputs, output):
        output.retain_grad()
        embedded.append(output)

    handle = model.token_emb.register_forward_hook(keep_grad)
    logits = model(x)
    handle.remove()
    emb = embedded[0]  # (1, height, width * channels, dim): the token grid, in the model's order per row
    dependency = torch.zeros(len(order), len(order), dtype=torch.bool)
    for p, (c, i, j) in enumerate(order):
        emb.grad = None
        logits[0, :, c, i, j].sum().backward(retain_graph=True)
        dependency[p] = emb.grad[0].abs().sum(-1).flatten() > 0
    assert torch.equal(dependency, torch.ones_like(dependency).tril(-1))


# -- sampling --------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_shape,levels,num_classes,temperature",
                         [((1, 4, 5), 6, None, 1.0), ((3, 2, 3), 5, 4, 0.7), ((2, 3, 2), 4, None, 1.6)])
def test_cached_sampling_equals_reference(image_shape, levels, num_classes, temperature):
    model = make_model(image_shape, levels, num_classes, std=0.15)
    labels = None if num_classes is None else torch.tensor([0, 3, 1, 2, 3])
    samples = []
    for use_cache in (True, False):
        gen = torch.Generator().manual_seed(7)
        samples.append(model.sample(5, labels, temperature=temperature, generator=gen, use_cache=use_cache))
    assert samples[0].dtype == torch.long and samples[0].shape == (5, *image_shape)
    assert torch.equal(samples[0], samples[1])
    assert len(samples[0].unique()) > 1  # a test that cannot pass on constant images


def test_sampling_restores_training_mode_and_is_reproducible():
    model = make_model((1, 3, 3), 4).train()
    a = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert model.training
    assert torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(0)))


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_errors():
    model = make_model((1, 3, 3), 4)
    conditional = make_model((1, 3, 3), 4, num_classes=3)
    x = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    cases = [
        (lambda: model(torch.zeros(2, 3, 3, dtype=torch.long)), ValueError, "shape"),
        (lambda: model(torch.zeros(2, 1, 3, 4, dtype=torch.long)), ValueError, "shape"),
        (lambda: model(x.float()), TypeError, "integer dtype"),
        (lambda: model([[0]]), TypeError, "torch.Tensor"),
        (lambda: model(x + 4), ValueError, r"\[0, 4\)"),
        (lambda: model(x - 1), ValueError, r"\[0, 4\)"),
        (lambda: model(x, torch.zeros(2, dtype=torch.long)), ValueError, "num_classes=None"),
        (lambda: conditional(x), ValueError, "labels are required"),
        (lambda: conditional(x, torch.tensor([0, 3])), ValueError, r"\[0, 3\)"),
        (lambda: conditional(x, torch.tensor([0])), ValueError, "one label per image"),
        (lambda: conditional(x, torch.tensor([0.0, 1.0])), TypeError, "integer dtype"),
        (lambda: model.sample(0), ValueError, "batch_size"),
        (lambda: model.sample(2, temperature=0.0), ValueError, "temperature"),
        (lambda: model.sample(2, temperature=-1.0), ValueError, "temperature"),
        (lambda: model.sample(2, temperature="hot"), TypeError, "temperature"),
        (lambda: conditional.sample(2), ValueError, "labels are required"),
        (lambda: conditional.sample(2, torch.tensor([0, 5])), ValueError, "labels"),
        (lambda: AutoregressiveAxialTransformer((8, 8), 4), ValueError, "image_shape"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 8), 1), ValueError, "num_levels"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 8), 4, dim=16.0), TypeError, "dim must be an int"),
        (lambda: AutoregressiveAxialTransformer("1x8x8", 4), TypeError, "image_shape"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_uint8_images_score_as_long_ones():
    model = make_model((1, 2, 3), 3)
    x = torch.randint(0, 3, (4, 1, 2, 3))
    torch.testing.assert_close(model.log_prob(x.to(torch.uint8)), model.log_prob(x))


# -- the main job: examples/train_image_model.py ---------------------------------------------------
TINY = ["--dim", "8", "--heads", "2", "--depth", "1", "--batch-size", "8", "--samples-per-row", "2", "--no-progress"]


def test_training_resumed_after_a_kill_ends_with_the_same_weights(tmp_path, monkeypatch):
    from examples import train_image_model as job

    def final_weights(out):
        return torch.load(out / "checkpoint.pt", weights_only=True)["model"]

    steps = ["--steps", "7", "--checkpoint-every", "3"]
    straight = job.main([*TINY, *steps, "--out", str(tmp_path / "straight")])
    assert straight["test_bits_per_dim"] < straight["uniform_bits_per_dim"]
    assert (tmp_path / "straight" / "samples.png").exists()

    killed = tmp_path / "killed"
    real_step, calls = torch.optim.AdamW.step, []

    def dying_step(self, *args, **kwargs):  # the process dies during step 5, after the step-3 checkpoint
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        job.main([*TINY, *steps, "--out", str(killed)])
    monkeypatch.undo()
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 3
    job.main([*TINY, *steps, "--out", str(killed), "--resume"])
    expected, resumed = final_weights(tmp_path / "straight"), final_weights(killed)
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


def test_training_runs_under_torchrun_with_two_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "examples" / "train_image_model.py"), *TINY, "--steps", "3", "--out", str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test bits/dim" in result.stdout
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and len(state["rng"]) == 2
    assert (tmp_path / "samples.png").exists()

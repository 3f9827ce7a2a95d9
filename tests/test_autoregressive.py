"""AutoregressiveAxialTransformer: exact normalisation, causality, cached sampling, bad input, the main job."""
from __future__ import annotations

import itertools
import math
import subprocess

import pytest
import torch

from axial_attention import AutoregressiveAxialTransformer

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def make_model(image_shape, levels, num_classes=None, depth=2, seed=0, std=0.3, **options):
    """A small model with weights drawn large enough that every path (attention, context) matters:
    the default near-zero output projections would make a leak too small to see. `options`: further
    constructor arguments (past_window, ...)."""
    torch.manual_seed(seed)
    model = AutoregressiveAxialTransformer(image_shape, levels, dim=16, heads=2, depth=depth, num_classes=num_classes,
                                           **options)
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
    """(channel, *index) of every position in the model's order: raster over the axes, channels innermost."""
    channels, *axes = image_shape
    return [(c, *index) for index in itertools.product(*map(range, axes)) for c in range(channels)]


# -- exact likelihood ------------------------------------------------------------------------------
@pytest.mark.parametrize("image_shape,levels", [((1, 2, 3), 3), ((2, 2, 2), 2), ((3, 1, 2), 3), ((1, 3, 2), 2)])
@pytest.mark.parametrize("num_classes,label", [(None, None), (3, 0), (3, 2)])
def test_probabilities_of_all_images_sum_to_one(image_shape, levels, num_classes, label):
    model = make_model(image_shape, levels, num_classes)
    assert total_probability(model, image_shape, levels, label) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("image_shape,levels", [((1, 2, 2, 2), 2), ((2, 2, 1, 2), 2), ((1, 3, 1, 2), 3), ((1, 5), 3),
                                               ((1, 2, 1, 2, 2), 2)])
@pytest.mark.parametrize("num_classes,label", [(None, None), (3, 1)])
def test_probabilities_of_all_tensors_of_any_number_of_axes_sum_to_one(image_shape, levels, num_classes, label):
    """Videos (C, T, H, W), a 4-axis volume and sequences (C, L): every level's shift and mask hold."""
    model = make_model(image_shape, levels, num_classes, std=0.5)
    assert total_probability(model, image_shape, levels, label) == pytest.approx(1.0, abs=1e-4)


def test_normalisation_check_catches_a_leak_in_a_middle_level():
    image_shape, levels = (1, 2, 2, 2), 2
    model = make_model(image_shape, levels, std=0.5)
    for layer in model.middle[0]:
        layer[-1].attn.causal = False  # the masked (height) attention of the video's second level
    assert abs(total_probability(model, image_shape, levels) - 1.0) > 1e-3


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


@pytest.mark.parametrize("image_shape", [(2, 3, 3), (2, 2, 2, 3), (1, 2, 2, 1, 2), (3, 4)])
def test_gradient_of_each_logit_reaches_exactly_the_past(image_shape):
    """The embedding-level dependency matrix equals the strict lower triangle of the model's order,
    for images, videos, 4-axis volumes and sequences."""
    model = make_model(image_shape, 3)
    dependency = dependency_matrix(model)
    assert torch.equal(dependency, torch.ones_like(dependency).tril(-1))


def dependency_matrix(model):
    """Which token embeddings reach each logit through the gradient: bool (positions, positions), the
    model's order on both sides."""
    image_shape = model.image_shape
    order = raster_order(image_shape)
    x = torch.randint(0, model.num_levels, (1, *image_shape))
    embedded = []

    def keep_grad(module, inputs, output):
        output.retain_grad()
        embedded.append(output)

    handle = model.token_emb.register_forward_hook(keep_grad)
    logits = model(x)
    handle.remove()
    emb = embedded[0]  # (1, *token grid, dim): raster over the grid is the model's order
    dependency = torch.zeros(len(order), len(order), dtype=torch.bool)
    for p, position in enumerate(order):
        emb.grad = None
        logits[(0, slice(None), *position)].sum().backward(retain_graph=True)
        dependency[p] = emb.grad[0].abs().sum(-1).flatten() > 0
    return dependency


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


@pytest.mark.parametrize("image_shape,levels,num_classes,temperature,keep",
                         [((1, 4, 3), 5, 3, 0.8, 1), ((3, 3, 2), 4, None, 1.3, 2), ((2, 4, 2), 3, 4, 0.6, 3)])
def test_cached_completion_equals_reference_and_keeps_the_prefix(image_shape, levels, num_classes, temperature, keep,
                                                                   monkeypatch):
    import axial_attention.models.sampling as sampling

    model = make_model(image_shape, levels, num_classes, std=0.3)
    x = torch.randint(0, levels, (6, *image_shape), generator=torch.Generator().manual_seed(3))
    labels = None if num_classes is None else torch.arange(6) % num_classes
    real_draw, logits_seen = sampling.draw, []

    def recording_draw(logits, *args):  # every step's logits, to compare the paths beyond their draws
        logits_seen[-1].append(logits)
        return real_draw(logits, *args)

    monkeypatch.setattr(sampling, "draw", recording_draw)
    completions = []
    for prefix, use_cache in ((x, True), (x, False), ((x + 1) % levels, True)):
        logits_seen.append([])
        gen = torch.Generator().manual_seed(11)
        completions.append(model.complete(prefix, keep, labels, temperature, gen, use_cache=use_cache))
    cached, reference, other_prefix = (torch.stack(steps) for steps in logits_seen)
    assert len(cached) == (image_shape[1] - keep) * image_shape[2] * image_shape[0]  # only the rows after `keep`
    assert torch.equal(completions[0], completions[1])
    torch.testing.assert_close(cached, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(completions[0][:, :, :keep], x[:, :, :keep])
    assert not torch.equal(completions[0][:, :, keep:], x[:, :, keep:])  # the rest is drawn, not copied
    # The cached path reads the kept rows: another prefix gives the first sampled token other odds.
    assert (other_prefix[0] - cached[0]).abs().max() > 1e-2


@pytest.mark.parametrize("image_shape,num_classes,temperature,keep",
                         [((2, 3, 2, 3), 3, 0.7, 1), ((1, 3, 3, 2), None, 1.4, 0), ((1, 2, 2, 2, 2), 2, 0.9, 1),
                          ((2, 7), 4, 0.8, 3), ((1, 6), None, 1.2, 0)])
def test_cached_sampling_of_videos_volumes_and_sequences_equals_reference(image_shape, num_classes, temperature,
                                                                          keep):
    levels = 5
    model = make_model(image_shape, levels, num_classes, std=0.3)
    x = torch.randint(0, levels, (4, *image_shape), generator=torch.Generator().manual_seed(2))
    labels = None if num_classes is None else torch.arange(4) % num_classes
    results = []
    for use_cache in (True, False):
        gen = torch.Generator().manual_seed(5)
        results.append(model.complete(x, keep, labels, temperature, gen, use_cache=use_cache))
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0][:, :, :keep], x[:, :, :keep])
    assert len(results[0][:, :, keep:].unique()) > 1


def test_an_image_checkpoint_of_the_2d_only_package_loads_with_the_same_likelihood(tmp_path):
    """The generalised model is the image model: the state dict of the package at 9345f34 (before
    the N-D generalisation) loads by the same names and gives the same log_prob."""
    from benchmarks.train_step import package_at

    try:
        old_package = package_at("9345f34", tmp_path)
    except (OSError, subprocess.CalledProcessError) as error:  # no git or no history: nothing to compare with
        pytest.skip(f"the package at 9345f34 is not available from git here: {error}")
    torch.manual_seed(0)
    old = old_package.AutoregressiveAxialTransformer((2, 3, 4), 6, dim=16, heads=2, depth=2, inner_depth=1,
                                                     num_classes=3).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0.0, 0.3)
    new = AutoregressiveAxialTransformer((2, 3, 4), 6, dim=16, heads=2, depth=2, inner_depth=1, num_classes=3).eval()
    new.load_state_dict(old.state_dict())  # strict: the same names and shapes
    x = torch.randint(0, 6, (5, 2, 3, 4))
    y = torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(new.log_prob(x, y), old.log_prob(x, y), rtol=1e-5, atol=1e-5)


def test_complete_keeping_everything_or_nothing():
    model = make_model((2, 3, 2), 4, std=0.15)
    x = torch.randint(0, 4, (3, 2, 3, 2)).to(torch.uint8)
    assert torch.equal(model.complete(x, 3), x.long())
    nothing = model.complete(x, 0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(nothing, model.sample(3, generator=torch.Generator().manual_seed(5)))


def test_save_pretrained_round_trip(tmp_path):
    model = make_model((2, 3, 2), 5, num_classes=3)
    x = torch.randint(0, 5, (4, 2, 3, 2))
    y = torch.tensor([0, 2, 1, 2])
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = AutoregressiveAxialTransformer.from_pretrained(tmp_path)
    assert loaded.config == model.config and not loaded.training
    torch.testing.assert_close(loaded.log_prob(x, y), model.log_prob(x, y), rtol=0, atol=0)


def test_residual_dropout_is_dropout():
    """The CPU residual dropout keeps each element with probability 1 - p, scales by 1 / (1 - p), and
    is the identity in eval mode; attention-weight dropout is a separate switch."""
    model = AutoregressiveAxialTransformer((1, 2, 2), 4, dim=8, heads=2, depth=1, dropout=0.3, attn_dropout=0.1)
    drop = model.inner[0].drop
    assert model.inner[0].attn.dropout == 0.1
    x = torch.ones(400, 500)
    torch.manual_seed(0)
    y = drop.train()(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert torch.equal(drop.eval()(x), x)


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
        (lambda: AutoregressiveAxialTransformer((8,), 4), ValueError, "at least one axis"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 0), 4), ValueError, r"image_shape\[2\] must be >= 1"),
        (lambda: AutoregressiveAxialTransformer((1, 8, -2, 4), 4), ValueError, r"image_shape\[2\] must be >= 1"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 8), 4, level_depths=(2,)), ValueError, "level_depths"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 8), 1), ValueError, "num_levels"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 8), 4, dim=16.0), TypeError, "dim must be an int"),
        (lambda: AutoregressiveAxialTransformer("1x8x8", 4), TypeError, "image_shape"),
        (lambda: AutoregressiveAxialTransformer((1, 8, 8), 4, attn_dropout=1.0), ValueError, "attn_dropout"),
        (lambda: model.complete(x, 4), ValueError, r"keep must be in \[0, 3\]"),
        (lambda: model.complete(x, 1.5), TypeError, "keep must be an int"),
        (lambda: model.complete(x.float(), 1), TypeError, "integer dtype"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_an_empty_batch_completes_to_empty_results():
    """(Scoring an empty batch is in the module contract, tests/test_modules.py.)"""
    model = make_model((2, 3, 2), 4, num_classes=3).train()
    x, y = torch.zeros(0, 2, 3, 2, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    for use_cache in (True, False):
        assert model.complete(x, 1, y, use_cache=use_cache).shape == (0, 2, 3, 2)


def test_uint8_images_score_as_long_ones():
    model = make_model((1, 2, 3), 3)
    x = torch.randint(0, 3, (4, 1, 2, 3))
    torch.testing.assert_close(model.log_prob(x.to(torch.uint8)), model.log_prob(x))


# -- rotary positions ------------------------------------------------------------------------------
@pytest.mark.parametrize("image_shape,levels,num_classes,label",
                         [((1, 2, 3), 3, None, None), ((2, 2, 2), 2, 3, 1), ((1, 2, 1, 2, 2), 2, None, None),
                          ((3, 3), 2, None, None)])
def test_rotary_model_normalises_exactly(image_shape, levels, num_classes, label):
    model = make_model(image_shape, levels, num_classes, std=0.5, pos_emb="rotary")
    assert total_probability(model, image_shape, levels, label) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("image_shape", [(2, 3, 3), (1, 2, 2, 3), (3, 4)])
def test_rotary_model_logits_reach_exactly_the_past(image_shape):
    dependency = dependency_matrix(make_model(image_shape, 3, pos_emb="rotary"))
    assert torch.equal(dependency, torch.ones_like(dependency).tril(-1))


@pytest.mark.parametrize("image_shape,num_classes,keep", [((3, 3, 4), 3, 1), ((1, 3, 3, 2), None, 1), ((2, 6), 2, 2)])
def test_rotary_cached_sampling_equals_reference(image_shape, num_classes, keep):
    """The caches hold keys rotated at their own positions and each new query is rotated at its index."""
    model = make_model(image_shape, 5, num_classes, std=0.3, pos_emb="rotary")
    x = torch.randint(0, 5, (4, *image_shape), generator=torch.Generator().manual_seed(2))
    labels = None if num_classes is None else torch.arange(4) % num_classes
    results = [model.complete(x, keep, labels, 1.1, torch.Generator().manual_seed(5), use_cache=use_cache)
               for use_cache in (True, False)]
    assert torch.equal(results[0], results[1])
    assert len(results[0][:, :, keep:].unique()) > 1


def test_rotary_model_is_the_same_function_at_any_size_it_can_be_built_for():
    """No weight depends on the size: a rotary model's weights load into one built for another size, and the
    likelihood of a row there equals the small model's on the same row (the inner level sees only its row's
    past, and the rows before it through the levels above, identically)."""
    small = make_model((1, 1, 4), 3, pos_emb="rotary")
    large = AutoregressiveAxialTransformer((1, 1, 9), 3, dim=16, heads=2, depth=2, pos_emb="rotary").eval()
    large.load_state_dict(small.state_dict())
    x = torch.randint(0, 3, (5, 1, 1, 9))
    per_token_large = -torch.nn.functional.cross_entropy(
        large(x).squeeze(3), x.squeeze(2), reduction="none").squeeze(1)  # (batch, 9)
    torch.testing.assert_close(per_token_large[:, :4].sum(1), small.log_prob(x[..., :4]), rtol=1e-5, atol=1e-5)

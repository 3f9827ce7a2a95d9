"""PastNeighbourhoodAttention and the models that use it (past_window): against a naive loop over
positions, causality by perturbation and by exact normalisation, cached sampling against the reference."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from test_autoregressive import dependency_matrix, make_model, total_probability

import axial_attention.layers.neighbourhood as neighbourhood
from axial_attention import AutoregressiveAxialTransformer, PastNeighbourhoodAttention
from axial_attention.layers.neighbourhood import gather_windows

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


def randomised(module, std=0.5, seed=0):
    """Weights drawn large enough that every path matters (the output projection starts near zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module.eval()


def naive_past_attention(m: PastNeighbourhoodAttention, pixels: torch.Tensor) -> torch.Tensor:
    """The block written out position by position: an explicit masked convolution for the features,
    then for each query the keys of every window position inside the earlier slices, one score each."""
    batch, slices, *space = pixels.shape[:-1]
    dim, heads, r = m.dim, m.heads, m.radius
    e = dim // heads
    offsets = list(itertools.product(range(-r, r + 1), repeat=len(space)))
    linear, norm = m.causal_feature[1], m.causal_feature[2]

    def inside(p):
        return all(0 <= i < n for i, n in zip(p, space))

    def feature(t, p):
        parts = []
        for d in offsets[: len(offsets) // 2]:  # the offsets before the centre in raster order
            q = tuple(i + j for i, j in zip(p, d))
            parts.append(pixels[(slice(None), t, *q)] if inside(q) else pixels.new_zeros(batch, dim))
        return F.layer_norm(linear(torch.cat(parts, -1)), (dim,), norm.weight, norm.bias)

    out = torch.zeros_like(pixels)
    for t in range(slices):
        for p in itertools.product(*map(range, space)):
            q = m.to_q(feature(t, p)).view(batch, heads, e)
            scores, values = [], []
            for s in range(1, m.past_slices + 1):
                for j, d in enumerate(offsets):
                    key_at = tuple(i + k for i, k in zip(p, d))
                    if t - s < 0 or not inside(key_at):
                        continue
                    k = m.to_k(feature(t - s, key_at)).view(batch, heads, e)
                    scores.append((q * k).sum(-1) / math.sqrt(e) + m.offset_bias[:, (m.past_slices - s) * len(offsets) + j])
                    values.append(m.to_v(pixels[(slice(None), t - s, *key_at)]).view(batch, heads, e))
            attended = pixels.new_zeros(batch, dim)  # no key at all (slice 0): nothing attended
            if scores:
                weights = torch.stack(scores, -1).softmax(-1)  # (batch, heads, keys)
                attended = (weights[..., None] * torch.stack(values, -2)).sum(-2).reshape(batch, dim)
            out[(slice(None), t, *p)] = m.to_out(attended)
    return out


@pytest.mark.parametrize("space,window,past_slices", [((5,), 3, 1), ((3, 4), 3, 2), ((4, 3), 5, 1), ((2, 3, 2), 3, 2)])
def test_matches_the_naive_loop(space, window, past_slices):
    m = randomised(PastNeighbourhoodAttention(8, 1 + len(space), window, past_slices, heads=2)).double()
    pixels = torch.randn(2, 3, *space, 8, dtype=torch.float64)
    torch.testing.assert_close(m(pixels), naive_past_attention(m, pixels), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("space,window", [((6,), 3), ((4, 5), 5), ((2, 3, 3), 3)])
def test_features_as_a_convolution_equal_the_gathered_windows(space, window):
    """The parallel path's shifted sums and cached sampling's window gather compute one feature."""
    m = randomised(PastNeighbourhoodAttention(8, 1 + len(space), window, heads=2))
    pixels = torch.randn(2, 3, *space, 8)
    torch.testing.assert_close(m.features(pixels), m.feature(gather_windows(pixels, m.radius)))


def test_output_depends_on_the_earlier_slices_and_the_positions_before_only():
    """Perturb a position: no output at it or before it in the order moves; the next slice's do (the
    check can fail)."""
    m = randomised(PastNeighbourhoodAttention(8, 3, window=3, past_slices=2, heads=2))
    pixels = torch.randn(1, 3, 3, 4, 8)
    base = m(pixels)
    order = list(itertools.product(range(3), range(3), range(4)))
    for n, position in enumerate(order):
        changed = pixels.clone()
        changed[(0, *position)] += torch.randn(8)
        out = m(changed)
        for before in order[: n + 1]:
            torch.testing.assert_close(out[(0, *before)], base[(0, *before)], rtol=0, atol=1e-6)
        t, h, w = position
        if t + 1 < 3:  # the same position one slice later looks at it
            assert not torch.allclose(out[0, t + 1, h, w], base[0, t + 1, h, w])


@pytest.mark.parametrize("image_shape,levels,past_slices",
                         [((1, 2, 2, 2), 2, 1), ((2, 2, 1, 2), 2, 2), ((1, 3, 2, 1), 2, 2), ((1, 3, 2), 2, 1),
                          ((2, 2, 2), 2, 1), ((1, 2, 1, 2, 2), 2, 1)])
def test_probabilities_of_all_videos_and_images_sum_to_one(image_shape, levels, past_slices):
    model = make_model(image_shape, levels, std=0.5, past_window=3, past_slices=past_slices)
    assert total_probability(model, image_shape, levels) == pytest.approx(1.0, abs=1e-4)


def test_normalisation_check_catches_attention_into_the_current_slice(monkeypatch):
    """Attending into slice t itself (the windows one slice later) sees the future: the check above breaks."""
    image_shape, levels = (1, 2, 2, 2), 2
    model = make_model(image_shape, levels, std=0.5, past_window=3)
    assert total_probability(model, image_shape, levels) == pytest.approx(1.0, abs=1e-4)
    real = neighbourhood.gather_past_windows

    def leaky(t, past, radius):  # slice i gets the windows of slices i - past + 1 .. i
        return real(torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], 1), past, radius)

    monkeypatch.setattr(neighbourhood, "gather_past_windows", leaky)
    assert abs(total_probability(model, image_shape, levels) - 1.0) > 1e-3


@pytest.mark.parametrize("image_shape", [(2, 3, 2, 2), (1, 3, 3), (1, 2, 2, 1, 2)])
def test_gradient_of_each_logit_reaches_exactly_the_past(image_shape):
    model = make_model(image_shape, 3, past_window=3, past_slices=2)
    dependency = dependency_matrix(model)
    assert torch.equal(dependency, torch.ones_like(dependency).tril(-1))


@pytest.mark.parametrize("image_shape,past_slices,keep,num_classes",
                         [((1, 3, 4, 4), 1, 0, None), ((2, 3, 3, 2), 2, 1, 3), ((1, 4, 5), 2, 2, None),
                          ((1, 3, 2, 2, 2), 1, 1, None), ((3, 3, 2, 3), 2, 2, 2)])
def test_cached_sampling_equals_reference(image_shape, past_slices, keep, num_classes):
    model = make_model(image_shape, 5, num_classes, std=0.3, past_window=3, past_slices=past_slices)
    x = torch.randint(0, 5, (3, *image_shape), generator=torch.Generator().manual_seed(2))
    labels = None if num_classes is None else torch.arange(3) % num_classes
    results = [model.complete(x, keep, labels, 1.0, torch.Generator().manual_seed(5), use_cache=use_cache)
               for use_cache in (True, False)]
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0][:, :, :keep], x[:, :, :keep])
    assert len(results[0][:, :, keep:].unique()) > 1


def test_bits_per_slice_add_up_to_the_likelihood():
    model = make_model((2, 3, 2, 2), 4, past_window=3)
    x = torch.randint(0, 4, (5, 2, 3, 2, 2))
    per_slice = model.bits_per_slice(x)
    assert per_slice.shape == (5, 3) and (per_slice > 0).all()
    torch.testing.assert_close(per_slice.sum(1), model.bits_per_dim(x) * x[0].numel())
    assert model.bits_per_slice(x[:0]).shape == (0, 3)  # an empty last shard of an evaluation
    sequence = make_model((2, 5), 4)  # a sequence's slices are its positions, channels together
    y = torch.randint(0, 4, (3, 2, 5))
    torch.testing.assert_close(sequence.bits_per_slice(y).sum(1), -sequence.log_prob(y) / math.log(2))


def test_save_and_load_keep_the_block(tmp_path):
    model = make_model((1, 3, 4, 4), 5, past_window=3, past_slices=2)
    model.save_pretrained(tmp_path)
    loaded = AutoregressiveAxialTransformer.from_pretrained(tmp_path)
    x = torch.randint(0, 5, (2, 1, 3, 4, 4))
    assert loaded.past is not None and loaded.past.past_slices == 2
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="past_window must be odd"):
        AutoregressiveAxialTransformer((1, 4, 4, 4), 4, dim=8, heads=2, past_window=4)
    with pytest.raises(ValueError, match="past_window needs at least two axes"):
        AutoregressiveAxialTransformer((1, 16), 4, dim=8, heads=2, past_window=3)
    with pytest.raises(ValueError, match="past_slices must be >= 1"):
        AutoregressiveAxialTransformer((1, 4, 4, 4), 4, dim=8, heads=2, past_window=3, past_slices=0)
    with pytest.raises(TypeError, match="past_window must be an int"):
        AutoregressiveAxialTransformer((1, 4, 4, 4), 4, dim=8, heads=2, past_window=3.0)
    with pytest.raises(ValueError, match="window must be odd"):
        PastNeighbourhoodAttention(8, 2, window=2)
    with pytest.raises(ValueError, match="dim \\(9\\) must be divisible by heads \\(2\\)"):
        PastNeighbourhoodAttention(9, 2, heads=2)


def test_slice_zero_has_no_past_and_gets_the_output_projections_bias():
    torch.manual_seed(0)
    attention = PastNeighbourhoodAttention(8, 2, window=3, past_slices=2, heads=2)
    nn.init.normal_(attention.to_out.bias)
    out = attention(torch.randn(2, 3, 4, 8))
    torch.testing.assert_close(out[:, 0], attention.to_out.bias.expand(2, 4, 8))
    assert not torch.allclose(out[:, 1], attention.to_out.bias.expand(2, 4, 8))

"""ReversibleSequence against the same coupling run with plain autograd (written out here)."""
import pytest
import torch
from torch import nn

from axial_attention import ReversibleSequence


class Noisy(nn.Module):
    """A small residual function that uses the random generator (dropout) and takes an optional kwarg."""

    def __init__(self, dim, p=0.3):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.drop = nn.Dropout(p)

    def forward(self, x, scale=None):
        h = self.drop(torch.tanh(self.lin(x)))
        return h if scale is None else h * scale


def plain_coupling(pairs, x, **kwargs):
    """y1 = x1 + f(x2); y2 = x2 + g(y1), both streams starting at x, output their mean."""
    x1 = x2 = x
    for f, g in pairs:
        x1 = x1 + f(x2, **kwargs)
        if g is not None:
            x2 = x2 + g(x1, **kwargs)
    return (x1 + x2) / 2


def grads_of(loss_fn, tensors):
    for t in tensors:
        t.grad = None
    loss_fn().backward()
    return [t.grad.clone() for t in tensors]


def make(depth, dim=6, odd=False, p=0.3):
    pairs = [(Noisy(dim, p), Noisy(dim, p)) for _ in range(depth)]
    if odd:
        pairs.append((Noisy(dim, p), None))
    return pairs, ReversibleSequence(pairs).double()


@pytest.mark.parametrize("depth, odd", [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("input_grad", [True, False])
def test_gradients_equal_plain_autograd_with_dropout(depth, odd, input_grad):
    torch.manual_seed(0)
    pairs, rev = make(depth, odd=odd)
    x = torch.randn(4, 5, 6, dtype=torch.double, requires_grad=input_grad)
    targets = list(rev.parameters()) + ([x] if input_grad else [])

    def loss(run):
        def go():
            torch.manual_seed(123)  # same dropout masks for both runs, if the forward replays them
            return (run() * torch.linspace(-1, 1, 6, dtype=torch.double)).square().sum()
        return go

    ours = grads_of(loss(lambda: rev(x)), targets)
    expected = grads_of(loss(lambda: plain_coupling(pairs, x)), targets)
    assert all(g.abs().sum() > 0 for g in expected)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_dropout_actually_differs_between_seeds():
    """Guards the test above: it would pass vacuously if dropout were inactive."""
    torch.manual_seed(0)
    _, rev = make(2)
    x = torch.randn(4, 5, 6, dtype=torch.double)
    torch.manual_seed(1)
    a = rev(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, rev(x))


def test_tensor_kwargs_receive_gradients():
    torch.manual_seed(0)
    pairs, rev = make(2)
    x = torch.randn(4, 6, dtype=torch.double)
    scale = torch.rand(6, dtype=torch.double, requires_grad=True)
    targets = [scale, *rev.parameters()]

    def run(fn):
        torch.manual_seed(7)
        return fn().sin().sum()

    ours = grads_of(lambda: run(lambda: rev(x, scale=scale)), targets)
    expected = grads_of(lambda: run(lambda: plain_coupling(pairs, x, scale=scale)), targets)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_shared_parameters_sum_their_gradients():
    torch.manual_seed(0)
    shared = Noisy(5, p=0.0)
    pairs = [(shared, Noisy(5, p=0.0)), (Noisy(5, p=0.0), shared)]
    rev = ReversibleSequence(pairs).double()
    x = torch.randn(2, 5, dtype=torch.double)
    params = list(rev.parameters())
    ours = grads_of(lambda: rev(x).square().sum(), params)
    expected = grads_of(lambda: plain_coupling(pairs, x).square().sum(), params)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_random_stream_after_backward_is_the_plain_one():
    """Replaying dropout in backward must not consume or reset the user's random stream."""
    torch.manual_seed(0)
    pairs, rev = make(2)
    x = torch.randn(4, 6, dtype=torch.double)
    draws = []
    for fn in (lambda: rev(x), lambda: plain_coupling(pairs, x)):
        torch.manual_seed(5)
        fn().sum().backward()
        draws.append(torch.rand(8))
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)


def test_forward_keeps_no_activations():
    """Bytes saved for backward do not grow with depth: only the last block's outputs are kept."""
    def saved_bytes(depth):
        torch.manual_seed(0)
        _, rev = make(depth)
        x = torch.randn(16, 6, dtype=torch.double)
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            rev(x)
        return total[0]

    assert saved_bytes(8) == saved_bytes(1) == 2 * 16 * 6 * 8


class AutocastProbe(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.seen = []

    def forward(self, x):
        out = self.lin(x)
        self.seen.append((torch.is_grad_enabled(), out.dtype))
        return out


def test_backward_recomputes_under_the_forwards_autocast():
    torch.manual_seed(0)
    probe = AutocastProbe(8)
    rev = ReversibleSequence([(probe, AutocastProbe(8))])
    x = torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rev(x)
    out.float().sum().backward()  # outside autocast, as a training loop does
    assert probe.seen == [(False, torch.bfloat16), (True, torch.bfloat16)]
    assert all(p.grad is not None for p in rev.parameters())


def test_bf16_autocast_gradients_match_plain_autograd():
    torch.manual_seed(0)
    pairs, rev = make(2, dim=16, p=0.2)
    x = torch.randn(8, 16)
    params = list(rev.float().parameters())

    def loss(fn):
        def go():
            torch.manual_seed(3)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fn()
            return out.float().square().sum()
        return go

    ours = grads_of(loss(lambda: rev(x)), params)
    expected = grads_of(loss(lambda: plain_coupling(pairs, x)), params)
    for a, b in zip(ours, expected):
        # bf16 keeps 8 bits of mantissa: rebuilt inputs may round one step apart from the stored ones
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_no_grad_and_eval_give_the_plain_output():
    torch.manual_seed(0)
    pairs, rev = make(3)
    rev.eval()
    x = torch.randn(4, 6, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(rev(x), plain_coupling(pairs, x))
    torch.testing.assert_close(rev(x), plain_coupling(pairs, x))


def test_backward_twice_with_retained_graph_accumulates_twice():
    torch.manual_seed(0)
    _, rev = make(2, p=0.0)
    out = rev(torch.randn(2, 6, dtype=torch.double)).square().sum()
    out.backward(retain_graph=True)
    once = [p.grad.clone() for p in rev.parameters()]
    out.backward()
    for p, g in zip(rev.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g)


@pytest.mark.parametrize(
    "blocks, error",
    [([], ValueError), ([nn.Linear(2, 2)], TypeError), ([(nn.Linear(2, 2), "g")], TypeError), ([(1, None)], TypeError)],
)
def test_bad_blocks_are_refused(blocks, error):
    with pytest.raises(error):
        ReversibleSequence(blocks)


def test_streams_of_different_shapes_are_refused():
    rev = ReversibleSequence([(nn.Linear(3, 3), nn.Linear(3, 3))])
    with pytest.raises(ValueError, match="same shape"):
        rev.forward_streams(torch.randn(2, 3), torch.randn(4, 3))

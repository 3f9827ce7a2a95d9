"""Drop-in compatibility with lucidrains' axial-attention 0.6.1, checked against the real package."""
import pytest
import torch

import axial_attention
from axial_attention import AxialAttention, AxialPositionalEmbedding, convert_lucidrains_state_dict


def test_peer_is_the_real_other_package(peer):
    assert peer is not axial_attention and "AxialAttention" in dir(peer)
    assert not hasattr(peer.AxialAttention(8), "num_dimensions")  # theirs, not ours


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(dim=16, heads=4), (2, 5, 6, 16)),
        (dict(dim=16, heads=2, dim_index=1, sum_axial_out=False), (2, 16, 5, 6)),
        (dict(dim=12, heads=3, dim_heads=5, num_dimensions=3, dim_index=2), (1, 4, 12, 3, 5)),
        (dict(dim=8, heads=1, num_dimensions=1), (3, 7, 8)),
    ],
)
def test_attention_state_dict_converts_to_the_same_outputs(peer, kwargs, shape):
    torch.manual_seed(0)
    theirs = peer.AxialAttention(**kwargs)
    ours = AxialAttention(**kwargs)
    ours.load_state_dict(convert_lucidrains_state_dict(theirs.state_dict()))
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_nested_state_dict_converts(peer):
    theirs = torch.nn.Sequential(torch.nn.Identity(), peer.AxialAttention(8, heads=2))
    ours = torch.nn.Sequential(torch.nn.Identity(), AxialAttention(8, heads=2))
    ours.load_state_dict(convert_lucidrains_state_dict(theirs.state_dict()))
    x = torch.randn(1, 3, 4, 8)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("emb_dim_index, shape", [(1, (2, 8, 5, 6)), (3, (2, 5, 6, 8))])
def test_positional_state_dict_converts(peer, emb_dim_index, shape):
    theirs = peer.AxialPositionalEmbedding(8, (5, 6), emb_dim_index=emb_dim_index)
    ours = AxialPositionalEmbedding(8, (5, 6), emb_dim_index=emb_dim_index)
    ours.load_state_dict(convert_lucidrains_state_dict(theirs.state_dict()))
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), theirs(x))


def test_peer_readme_examples_run_unchanged():
    """0.6.1's README usage, verbatim but for the video's size."""
    img = torch.randn(1, 3, 256, 256)
    attn = AxialAttention(dim=3, dim_index=1, dim_heads=32, heads=1, num_dimensions=2, sum_axial_out=True)
    assert attn(img).shape == (1, 3, 256, 256)

    img = torch.randn(1, 20, 20, 512)
    attn = AxialAttention(dim=512, dim_index=-1, heads=8, num_dimensions=2)
    assert attn(img).shape == (1, 20, 20, 512)

    video = torch.randn(1, 5, 128, 16, 16)
    attn = AxialAttention(dim=128, dim_index=2, heads=8, num_dimensions=3)
    assert attn(video).shape == (1, 5, 128, 16, 16)

    img = torch.randn(1, 512, 20, 20)
    attn = AxialAttention(dim=512, heads=8, dim_index=1)
    pos_emb = AxialPositionalEmbedding(dim=512, shape=(20, 20))
    assert attn(pos_emb(img)).shape == (1, 512, 20, 20)


def test_a_peer_that_cannot_be_installed_is_named_with_pips_reason(tmp_path, monkeypatch):
    """Offline, the peer fixture turns this error into a skip with its message (tests/conftest.py)."""
    import subprocess

    from benchmarks import peer as peer_module

    def pip_fails(command, **kwargs):
        raise subprocess.CalledProcessError(1, command, stderr="ERROR: No matching distribution found\n")

    monkeypatch.setattr(peer_module.subprocess, "run", pip_fails)
    with pytest.raises(peer_module.PeerUnavailable, match="axial-attention==0.6.1: ERROR: No matching distribution"):
        peer_module.ensure_installed(tmp_path / "peer")

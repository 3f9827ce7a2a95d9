"""`axial-attention train --preset imagenet32|imagenet64`: the paper's configurations, overridden by explicit flags."""
import dataclasses

import pytest

from axial_attention.training import TrainConfig, cli
from axial_attention.training.presets import PRESETS, preset


@pytest.fixture
def trained(monkeypatch):
    """Runs the CLI with `train` replaced by a recorder of the TrainConfig it would train with."""
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "train", lambda args: seen.append(TrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})))

    def run(*argv):
        assert cli.main(list(argv)) == 0
        return seen[-1]
    return run


def test_the_imagenet32_preset_sets_the_official_configuration(trained):
    config = trained("train", "--preset", "imagenet32", "--data", "imagenet32/")
    # google-research/google-research axial/config_imagenet32.py
    assert (config.dim, config.heads, config.depth, config.inner_depth) == (1536, 16, 8, 8)
    assert (config.lr, config.dropout, config.attn_dropout, config.weight_decay) == (1e-4, 0.04, 0.0, 0.0)
    assert (config.ema, config.ema_decay, config.batch_size) == (True, 0.99995, 64)
    assert (config.levels, config.size, config.data) == (256, 32, "imagenet32/")


def test_the_imagenet64_preset_differs_where_the_official_configs_differ(trained):
    config = trained("train", "--preset", "imagenet64")
    assert (config.dim, config.lr, config.dropout, config.size) == (2048, 2e-4, 0.0, 64)
    assert (config.heads, config.depth, config.inner_depth, config.batch_size) == (16, 8, 8, 64)


def test_without_a_preset_nothing_changes(trained):
    assert trained("train") == TrainConfig()


@pytest.mark.parametrize("flags, expected", [
    (["--dim", "64"], {"dim": 64}),                 # the flag's own default still wins over the preset
    (["--batch-size=8", "--no-ema"], {"batch_size": 8, "ema": False}),
    (["--lr", "0.001", "--inner-depth", "2"], {"lr": 0.001, "inner_depth": 2}),
    (["--dropo", "0.5"], {"dropout": 0.5}),         # an abbreviation argparse accepts counts as given
])
def test_explicit_flags_override_the_preset(trained, flags, expected):
    config = trained("train", *flags, "--preset", "imagenet32")
    for key, value in expected.items():
        assert getattr(config, key) == value, key
    untouched = {k: v for k, v in PRESETS["imagenet32"].items() if k not in expected}
    assert {k: getattr(config, k) for k in untouched} == untouched


def test_an_unknown_preset_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--preset", "imagenet128"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--preset" in err and "imagenet128" in err and "imagenet32" in err
    with pytest.raises(ValueError, match=r"preset: expected one of imagenet32, imagenet64, got 'imagenet128'"):
        preset("imagenet128")


def test_every_preset_option_is_a_training_option():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in PRESETS:
        assert set(preset(name)) <= fields
        TrainConfig(**preset(name))  # builds

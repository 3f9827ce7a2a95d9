"""The Axial-ResNets as timm models (compat/timm_models.py).

Without timm, a stand-in `timm.models` records what `register_timm_models` and the entry points hand to timm's
register_model and build_model_with_cfg, and builds the model from those arguments as timm does; the filter that
loads official checkpoints runs on its own. With timm importable, `timm.create_model` itself: classification,
features_only at strides 4 to 32, pretrained weights from a file. timm imports torchvision, and the torchvision
wheel these machines can install is built for the CUDA torch, so here those tests skip.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from official_deeplab import random_network

from axial_attention import (
    AxialResNet,
    axial_resnet26s,
    axial_resnet50l,
    axial_resnet50m,
    axial_resnet50s,
    convert_axial_deeplab_state_dict,
    register_timm_models,
)
from axial_attention.compat import timm_models

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"axial_resnet26s": axial_resnet26s, "axial_resnet50s": axial_resnet50s,
         "axial_resnet50m": axial_resnet50m, "axial_resnet50l": axial_resnet50l}
REASON = "timm needs torchvision; the torchvision wheel here is built for the CUDA torch"


class StandIn:
    """timm.models as far as the registration touches it: its registry, and a build_model_with_cfg that records
    its arguments, gives the model the defaults timm takes from the pretrained config (num_classes, and in_chans
    from input_size) and calls the constructor with timm's remaining keyword arguments."""

    def __init__(self):
        self.registry, self.registered, self.builds = {}, [], []

    def is_model(self, name):
        return name in self.registry

    def model_entrypoint(self, name):
        return self.registry[name]

    def register_model(self, fn):
        self.registered.append(fn.__name__)
        self.registry[fn.__name__] = fn
        return fn

    def build_model_with_cfg(self, model_cls, variant, pretrained, pretrained_cfg=None, pretrained_cfg_overlay=None,
                             feature_cfg=None, pretrained_filter_fn=None, cache_dir=None, **kwargs):
        self.builds.append(dict(variant=variant, pretrained=pretrained, feature_cfg=feature_cfg,
                                pretrained_filter_fn=pretrained_filter_fn, kwargs=dict(kwargs)))
        cfg = timm_models.default_cfgs[variant]
        kwargs.setdefault("num_classes", cfg["num_classes"])
        kwargs.setdefault("in_chans", cfg["input_size"][0])
        return model_cls(**kwargs)


@pytest.fixture
def stand_in(monkeypatch):
    fake = StandIn()
    package = types.ModuleType("timm")
    package.models = types.SimpleNamespace(**{name: getattr(fake, name) for name in
                                              ("is_model", "model_entrypoint", "register_model",
                                               "build_model_with_cfg")})
    monkeypatch.setitem(sys.modules, "timm", package)
    monkeypatch.setitem(sys.modules, "timm.models", package.models)
    return fake


def create(stand_in, name, **kwargs):
    """What timm.create_model does with a registered name: call its entry point."""
    return stand_in.registry[name](pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                                   cache_dir=None, **kwargs)


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'torch-axial-attention\[timm\]'"):
        register_timm_models()
    with pytest.raises(ImportError, match=r"torch-axial-attention\[timm\]"):
        timm_models.axial_resnet26s()


@pytest.mark.slow
def test_importing_the_package_does_not_import_timm(tmp_path):
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text("raise RuntimeError('timm was imported')\n")
    code = "import sys, axial_attention; assert 'timm' not in sys.modules; print('ok')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tmp_path), str(ROOT)))}  # the stand-in timm first
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_registration_registers_the_four_models_once(stand_in):
    assert register_timm_models() == list(NAMES)
    assert register_timm_models() == list(NAMES)
    assert stand_in.registered == list(NAMES)  # the second call registered nothing again
    for name, entrypoint in stand_in.registry.items():
        assert entrypoint.__name__ == name and sys.modules[entrypoint.__module__].default_cfgs[name]


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_point_builds_the_package_model_through_build_model_with_cfg(stand_in, name):
    register_timm_models()
    with torch.device("meta"):  # shapes only
        model = create(stand_in, name, num_classes=10, in_chans=1, global_pool="max")
        ours = NAMES[name](num_classes=10, in_channels=1, global_pool="max")
    build = stand_in.builds[-1]
    assert build["variant"] == name and build["pretrained"] is False
    assert build["pretrained_filter_fn"] is timm_models.checkpoint_filter_fn
    assert build["feature_cfg"] == {"feature_cls": "getter", "flatten_sequential": True}
    assert build["kwargs"] == dict(num_classes=10, in_chans=1, global_pool="max")
    assert isinstance(model, AxialResNet) and model.extra_repr() == ours.extra_repr()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def test_the_pretrained_config_names_what_timm_adapts(stand_in):
    register_timm_models()
    model = create(stand_in, "axial_resnet26s")
    cfg = timm_models.default_cfgs["axial_resnet26s"]
    state = model.state_dict()
    assert f"{cfg['first_conv']}.weight" in state and state[f"{cfg['first_conv']}.weight"].shape[1] == 3
    assert cfg["classifier"] == model.get_classifier(name_only=True)
    assert state[f"{cfg['classifier']}.weight"].shape[0] == cfg["num_classes"] == model.num_classes == 1000
    assert cfg["input_size"][1:] == model.image_size  # the size its spans were built for
    assert not {"url", "file", "hf_hub_id"} & set(cfg)  # no hosted weights: a file is given by the user


def test_timm_names_of_the_input_and_a_conflict(stand_in):
    register_timm_models()
    with torch.device("meta"):
        assert create(stand_in, "axial_resnet26s", img_size=(64, 96)).image_size == (64, 96)
        with pytest.raises(ValueError, match="in_chans"):
            create(stand_in, "axial_resnet26s", in_channels=1)
        with pytest.raises(ValueError, match="img_size or image_size"):
            create(stand_in, "axial_resnet26s", img_size=64, image_size=64)


def official_checkpoint():
    """axial26s's weights as the official train.py saves them: {"net": DataParallel's state dict, "epoch": ...}."""
    state = random_network((1, 2, 4, 1), 0.5, 1000, torch.Generator().manual_seed(0))
    return state, {"net": {f"module.{key}": value for key, value in state.items()}, "epoch": 90}


def test_the_filter_converts_an_official_checkpoint_for_the_model():
    state, saved = official_checkpoint()
    model = axial_resnet26s().eval()
    filtered = timm_models.checkpoint_filter_fn(saved, model)
    expected = convert_axial_deeplab_state_dict(state)
    assert filtered.keys() == expected.keys() and all(torch.equal(filtered[k], expected[k]) for k in expected)
    model.load_state_dict(filtered)  # strict


def test_the_filter_leaves_the_classifier_and_input_channels_to_timm():
    _, saved = official_checkpoint()
    model = axial_resnet26s(num_classes=10, in_channels=1)
    filtered = timm_models.checkpoint_filter_fn(saved, model)
    # timm then drops fc (num_classes differs from the config's 1000) and adapts stem.0 to in_chans
    assert filtered["fc.weight"].shape == (1000, 1024) and filtered["stem.0.weight"].shape == (32, 3, 7, 7)


def test_the_filter_refuses_a_checkpoint_of_other_spans_with_the_converters_message():
    _, saved = official_checkpoint()
    with pytest.raises(ValueError, match="kernel_size is 56, the model's span 28"):
        timm_models.checkpoint_filter_fn(saved, axial_resnet26s(image_size=112))
    with pytest.raises(ValueError, match="layer1.1"):  # another architecture: 50s has blocks 26s has not
        timm_models.checkpoint_filter_fn(saved, axial_resnet50s())


def test_the_filter_passes_this_packages_own_state_dict_through():
    model = axial_resnet26s()
    state = model.state_dict()
    assert timm_models.checkpoint_filter_fn(state, model) == dict(state)
    with pytest.raises(TypeError, match="model must be the AxialResNet"):
        timm_models.checkpoint_filter_fn(official_checkpoint()[1], torch.nn.Linear(2, 2))


# --------------------------------------------------------------------------- with timm itself

@pytest.fixture(scope="module")
def timm():
    try:
        import timm
    except Exception as error:  # absent, or present with a torchvision that does not load
        pytest.skip(f"{REASON} ({type(error).__name__}: {error})")
    register_timm_models()
    return timm


def test_timm_lists_and_creates_the_models(timm):
    assert set(NAMES) <= set(timm.list_models("axial_resnet*"))
    model = timm.create_model("axial_resnet26s", num_classes=10).eval()
    assert isinstance(model, AxialResNet) and model.num_classes == 10
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_timm_features_only_at_strides_4_to_32(timm):
    model = timm.create_model("axial_resnet50s", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [128, 256, 512, 1024]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [
        (1, c, 64 // r, 96 // r) for c, r in zip(model.feature_info.channels(), model.feature_info.reduction())]


def test_timm_loads_an_official_checkpoint_file(timm, tmp_path):
    state, saved = official_checkpoint()
    path = tmp_path / "axial26s.pth"
    torch.save(saved, path)
    ours = axial_resnet26s().eval()
    ours.load_state_dict(convert_axial_deeplab_state_dict(state, ours))
    x = torch.randn(1, 3, 64, 64)
    model = timm.create_model("axial_resnet26s", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    features = timm.create_model("axial_resnet26s", pretrained=True, features_only=True, out_indices=(1, 2, 3, 4),
                                 pretrained_cfg_overlay=dict(file=str(path))).eval()
    adapted = timm.create_model("axial_resnet26s", pretrained=True, num_classes=10, in_chans=1,
                                pretrained_cfg_overlay=dict(file=str(path)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ours(x))
        torch.testing.assert_close(features(x), ours.forward_intermediates(x, indices=[1, 2, 3, 4],
                                                                           intermediates_only=True))
    assert adapted.fc.out_features == 10 and adapted.stem[0].weight.shape == (32, 1, 7, 7)
    torch.testing.assert_close(adapted.layer3[2].conv_up.weight, ours.layer3[2].conv_up.weight)

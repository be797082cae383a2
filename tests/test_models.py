"""Every registered backbone checked the same way: shapes, gradients, feature dropout, save/load, formats."""

from __future__ import annotations

import doctest
import hashlib
import io

import pytest
import torch

from ssl_seg.errors import UserError
from ssl_seg.models import MODELS, build_model, model_names, volumetric_model_names
from ssl_seg.models import attention_unet, fcn, unet, unetpp
from ssl_seg.models.attention_unet import AttentionGate
from ssl_seg.models.blocks import pad_to_multiple

# The package's own backbones; MONAI's (monai:*) have their own checks in tests/test_monai_backbones.py.
OWN = [name for name in model_names() if not name.startswith("monai:")]
# (name, options): every backbone of the package, plus UNet++ with deep supervision.
CONFIGS = [(name, {}) for name in OWN] + [("unetpp", {"deep_supervision": True})]
IDS = [name + ("-ds" if kw else "") for name, kw in CONFIGS]


def tiny(name: str, in_channels: int = 1, num_classes: int = 2, **kw) -> torch.nn.Module:
    """A 4-channel-wide model with fixed weights."""
    torch.manual_seed(0)
    return build_model(name, in_channels, num_classes, base_channels=4, **kw)


def assert_every_parameter_has_gradient(model: torch.nn.Module) -> None:
    """Every parameter got a finite, not all-zero gradient from the last backward."""
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


def test_registry_names() -> None:
    assert OWN == sorted(["unet", "unetpp", "attention_unet", "fcn"])
    assert model_names() == sorted(MODELS)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
@pytest.mark.parametrize(("in_channels", "num_classes", "size"), [(1, 2, (32, 32)), (3, 4, (37, 50)), (1, 4, (17, 64))])
def test_output_shape_any_size(name: str, kw: dict, in_channels: int, num_classes: int, size: tuple[int, int]) -> None:
    model = tiny(name, in_channels, num_classes, **kw).eval()
    with torch.no_grad():
        out = model(torch.rand(2, in_channels, *size))
    assert out.shape == (2, num_classes, *size)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_encode_strides(name: str, kw: dict) -> None:
    model = tiny(name, **kw).eval()
    assert model.stride == (32 if name == "fcn" else 16)
    with torch.no_grad():
        features = model.encode(torch.rand(1, 1, 64, 96))
    assert features[-1].shape[-2:] == (64 // model.stride, 96 // model.stride)
    assert model.decode(features).shape == (1, 2, 64, 96)


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("name", ["unet", "unetpp", "attention_unet"])
def test_depth_sets_stride(name: str, depth: int) -> None:
    model = tiny(name, depth=depth).eval()
    assert model.stride == 2**depth
    with torch.no_grad():
        features = model.encode(torch.rand(1, 1, 32, 32))
    assert [f.shape[-1] for f in features] == [32 // 2**i for i in range(depth + 1)]


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_backward_reaches_every_parameter(name: str, kw: dict) -> None:
    model = tiny(name, 3, 4, **kw).train()
    out = model(torch.rand(2, 3, 40, 36))
    loss = torch.nn.functional.cross_entropy(out, torch.randint(0, 4, (2, 40, 36)))
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert_every_parameter_has_gradient(model)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_feature_dropout_in_eval(name: str, kw: dict) -> None:
    model = tiny(name, **kw).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        plain, again = model(x), model(x, feature_dropout=0.0)
        perturbed = model(x, feature_dropout=0.5)
    assert torch.equal(plain, again)
    assert not torch.allclose(plain, perturbed)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_state_dict_round_trip(name: str, kw: dict) -> None:
    model = tiny(name, **kw)
    model.train()
    model(torch.rand(2, 1, 32, 32))  # move BatchNorm running statistics off their defaults
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    clone = build_model(name, 1, 2, base_channels=4, **kw)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), clone.eval()(x))


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_channels_last_matches_contiguous(name: str, kw: dict) -> None:
    model = tiny(name, 3, 2, **kw).eval()
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=IDS)
def test_autocast_bfloat16(name: str, kw: dict) -> None:
    model = tiny(name, **kw).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 1, 37, 50))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 2, 37, 50)
    assert torch.isfinite(out.float()).all()


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UserError) as info:
        build_model("resnet", 1, 2)
    for name in MODELS:
        assert name in str(info.value)


def test_unknown_option_is_user_error() -> None:
    with pytest.raises(UserError, match="deep_supervision"):
        build_model("unet", 1, 2, deep_supervision=True)
    with pytest.raises(UserError, match="depth"):
        build_model("fcn", 1, 2, depth=3)
    with pytest.raises(UserError, match="base_channels"):
        build_model("unet", 1, 2, base_channels=0)
    # deep_supervision=False is a no-op everywhere, so ModelConfig can be passed through as is.
    assert isinstance(build_model("unet", 1, 2, base_channels=4, deep_supervision=False), unet.UNet)


@pytest.mark.parametrize("depth", [2, 4])
def test_unetpp_deep_supervision_is_mean_of_heads(depth: int) -> None:
    plain = tiny("unetpp", 1, 3, depth=depth)
    supervised = tiny("unetpp", 1, 3, depth=depth, deep_supervision=True).eval()
    assert len(plain.heads) == 1 and len(supervised.heads) == depth
    assert len(supervised.nodes) == depth * (depth + 1) // 2  # decoder nodes X_i_j, j >= 1
    head_outputs: list[torch.Tensor] = []
    for head in supervised.heads:
        head.register_forward_hook(lambda _m, _i, out: head_outputs.append(out))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        out = supervised(x)
    assert len(head_outputs) == depth
    torch.testing.assert_close(out, torch.stack(head_outputs).mean(dim=0))
    assert not torch.allclose(head_outputs[0], head_outputs[-1])


def test_attention_gate_fully_open_passes_projected_skip() -> None:
    torch.manual_seed(0)
    gate = AttentionGate(skip_channels=4, gate_channels=8, inter_channels=2).eval()
    x, g = torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4)
    with torch.no_grad():
        gate.psi.weight.zero_()
        gate.psi.bias.fill_(-30.0)  # alpha = sigmoid(-30) ~ 0: the skip is shut
        closed = gate(x, g)
        gate.psi.bias.fill_(30.0)  # alpha ~ 1: the skip passes unchanged into the projection
        torch.testing.assert_close(gate(x, g), gate.project(x))
        torch.testing.assert_close(closed, gate.project(torch.zeros_like(x)))


def test_pad_to_multiple() -> None:
    x = torch.ones(1, 1, 5, 8)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 8, 8)
    assert padded[..., :5, :].sum() == 40 and padded[..., 5:, :].abs().sum() == 0
    assert torch.equal(pad_to_multiple(x, 1), x)


@pytest.mark.parametrize("module", [unet, unetpp, attention_unet, fcn])
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# Computed with the code before spatial_dims existed (commit 7510a12): torch.manual_seed(0), build_model(name, 2, 3,
# base_channels=4, dropout=0.1), eval, input torch.rand(1, 2, 19, 23) from a Generator seeded 1. Columns: sha1[:12]
# of the state-dict names and shapes, then the output's sum, sum of |.|, sum of squares (float64).
PRE_3D_OUTPUTS = {
    "attention_unet": ("070f7e799a5c", -79.778986, 333.381699, 109.844389),
    "fcn": ("da959ec9f3fc", 164.554555, 164.554555, 29.120086),
    "unet": ("9091f33f25f9", -79.429819, 332.882479, 109.554170),
    "unetpp": ("224a8eb4b7ab", -50.625995, 480.121044, 190.627603),
}


@pytest.mark.parametrize("name", OWN)
def test_2d_models_unchanged_by_spatial_dims(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 2, 3, base_channels=4, dropout=0.1).eval()
    names = "|".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    x = torch.rand(1, 2, 19, 23, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).double()
    keys, total, absolute, squares = PRE_3D_OUTPUTS[name]
    assert hashlib.sha1(names.encode()).hexdigest()[:12] == keys  # old checkpoints still load
    got = [y.sum().item(), y.abs().sum().item(), (y * y).sum().item()]
    assert got == pytest.approx([total, absolute, squares], rel=1e-6, abs=1e-5)


def test_volumetric_names() -> None:
    assert [name for name in volumetric_model_names() if name in OWN] == ["attention_unet", "unet"]


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_3d_forward_backward_every_parameter(name: str) -> None:
    model = tiny(name, 2, 3, depth=3, spatial_dims=3).train()
    assert model.spatial_dims == 3
    assert not any(isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d)) for m in model.modules())
    out = model(torch.rand(1, 2, 16, 16, 16))
    assert out.shape == (1, 3, 16, 16, 16)
    loss = torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (1, 16, 16, 16)))
    loss.backward()
    assert torch.isfinite(out).all() and torch.isfinite(loss)
    assert_every_parameter_has_gradient(model)


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_3d_odd_sizes_padded_and_cropped_back(name: str) -> None:
    model = tiny(name, 1, 2, depth=2, spatial_dims=3)
    model.train()
    model(torch.rand(2, 1, 8, 8, 8))  # BatchNorm running statistics off their defaults
    model.eval()
    x = torch.rand(1, 1, 5, 9, 7)
    padded = torch.zeros(1, 1, 8, 12, 8)
    padded[..., :5, :9, :7] = x  # zeros at the high end of each axis, as pad_to_multiple does
    with torch.no_grad():
        out, full = model(x), model(padded)
        encoded = model.encode(pad_to_multiple(x, model.stride))
    assert out.shape == (1, 2, 5, 9, 7)
    assert [f.shape[2:] for f in encoded] == [(8, 12, 8), (4, 6, 4), (2, 3, 2)]
    torch.testing.assert_close(out, full[..., :5, :9, :7])


@pytest.mark.parametrize("name", ["unet", "attention_unet"])
def test_3d_feature_dropout_and_state_dict(name: str) -> None:
    model = tiny(name, depth=2, spatial_dims=3).eval()
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        plain, perturbed = model(x), model(x, feature_dropout=0.5)
    assert not torch.allclose(plain, perturbed)
    clone = build_model(name, 1, 2, base_channels=4, depth=2, spatial_dims=3).eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(clone(x), plain)


def test_3d_refused_for_2d_only_backbones() -> None:
    for name in sorted(set(model_names()) - set(volumetric_model_names())):
        with pytest.raises(UserError, match=f"'{name}'.*2D only.*attention_unet, .*unet"):
            build_model(name, 1, 2, spatial_dims=3)
    with pytest.raises(UserError, match="spatial_dims must be 2"):
        build_model("unet", 1, 2, spatial_dims=4)


def test_input_rank_must_match_spatial_dims() -> None:
    with pytest.raises(ValueError, match="spatial_dims=2 expects a 4-D input"):
        tiny("unet")(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="spatial_dims=3 expects a 5-D input"):
        tiny("unet", spatial_dims=3)(torch.rand(1, 1, 8, 8))


def test_pad_to_multiple_3d() -> None:
    x = torch.ones(1, 2, 3, 5, 8)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 2, 4, 8, 8)
    assert padded[..., :3, :5, :].sum() == 2 * 3 * 5 * 8 and padded.sum() == x.sum()

"""MONAI networks as backbones (monai:*): built through the one registry, equal to MONAI's own forward, trained
through `ssl-seg train` with the semi-supervised methods, and one-line errors for options they cannot take."""

from __future__ import annotations

import pytest
import torch

from ssl_seg.cli import main
from ssl_seg.errors import UserError
from ssl_seg.models import build_model, model_names, volumetric_model_names
from ssl_seg.models.registry import backbone_options

MONAI = ["monai:basicunet", "monai:dynunet", "monai:segresnet", "monai:swinunetr", "monai:unetr"]
# the smallest sizes each network takes: (build_model keywords, training patch side)
TINY = {
    "monai:basicunet": ({"base_channels": 4}, 32),
    "monai:dynunet": ({"base_channels": 4, "depth": 3}, 32),
    "monai:segresnet": ({"base_channels": 8}, 32),
    "monai:swinunetr": ({"base_channels": 12}, 64),
    "monai:unetr": ({"base_channels": 4, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4}, 32),
}
# the same as --backbone-options and flags of `ssl-seg train`
TINY_FLAGS = {
    "monai:basicunet": ["--base-channels", "4"],
    "monai:dynunet": ["--base-channels", "4", "--backbone-options", "depth=3"],
    "monai:segresnet": ["--base-channels", "8"],
    "monai:swinunetr": ["--base-channels", "12", "--patch-size", "64"],
    "monai:unetr": ["--base-channels", "4", "--backbone-options", "hidden_size=48,mlp_dim=96,num_heads=4"],
}
TRAIN = ["train", "--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--device", "cpu", "--no-progress",
         "--val-every", "2", "--data", "phantom:cardiac?n=24&size=32"]


def tiny(name: str, spatial_dims: int = 2, num_classes: int = 3, **kw) -> torch.nn.Module:
    """The smallest network `name` builds, seeded, in eval mode."""
    options, patch = TINY[name]
    torch.manual_seed(0)
    return build_model(name, 1, num_classes, spatial_dims=spatial_dims, patch_size=patch, **options, **kw).eval()


def test_registered_for_images_and_volumes_and_listed_by_help(capsys) -> None:
    assert set(MONAI) <= set(model_names()) and set(MONAI) <= set(volumetric_model_names())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in MONAI) and "--backbone-options" in text


# swinunetr's 3D forward needs 64^3 voxels (13 s on one core): test_swinunetr_builds_for_volumes stands in for it
@pytest.mark.parametrize(("name", "spatial_dims"), [(n, d) for n in MONAI for d in (2, 3)
                                                    if (n, d) != ("monai:swinunetr", 3)])
def test_forward_shape_equals_monai_and_feature_dropout_perturbs(name: str, spatial_dims: int) -> None:
    model = tiny(name, spatial_dims)
    x = torch.rand(2 if spatial_dims == 2 else 1, 1, *[TINY[name][1]] * spatial_dims)
    with torch.no_grad():
        out, reference, perturbed = model(x), model.net(x), model(x, feature_dropout=0.5)
    assert out.shape == (x.shape[0], 3, *x.shape[2:])
    torch.testing.assert_close(out, reference, rtol=0, atol=0)  # encode/decode is MONAI's forward, split
    assert not torch.allclose(out, perturbed)


def test_swinunetr_builds_for_volumes() -> None:
    model = tiny("monai:swinunetr", spatial_dims=3)
    assert any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize(("name", "kw"), [(n, {}) for n in MONAI] + [("monai:dynunet", {"deep_supervision": True})])
def test_every_parameter_gets_a_gradient(name: str, kw: dict) -> None:
    model = tiny(name, **kw).train()  # DistributedDataParallel refuses networks with unused parameters
    model(torch.rand(2, 1, *[TINY[name][1]] * 2)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MONAI)
def test_odd_sizes_padded_and_cropped_back(name: str) -> None:
    with torch.no_grad():
        assert tiny(name)(torch.rand(1, 1, 27, 30)).shape == (1, 3, 27, 30)


def test_unetr_refuses_inputs_larger_than_its_patch() -> None:
    with pytest.raises(ValueError, match="up to its patch"):
        tiny("monai:unetr")(torch.rand(1, 1, 48, 32))


def test_dynunet_deep_supervision_is_the_mean_of_monai_heads() -> None:
    model = tiny("monai:dynunet", deep_supervision=True).train()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.net(x).mean(dim=1))  # MONAI stacks (B, heads, K, H, W)


def test_backbone_options_typed_from_the_constructor() -> None:
    assert backbone_options("monai:dynunet", "depth=3, res_block=true,dropout=0.1") == {
        "depth": 3, "res_block": True, "dropout": 0.1}
    assert backbone_options("unet", None) == {}


@pytest.mark.parametrize(("call", "expected"), [
    (lambda: backbone_options("monai:dynunet", "depht=3"), "--backbone-options depht=3: 'depht=3' is not key=value"),
    (lambda: backbone_options("monai:dynunet", "depth=three"), "depth=three is not of type int"),
    (lambda: backbone_options("monai:unetr", "patch_size=32"), "hidden_size, mlp_dim, num_heads"),
    (lambda: build_model("monai:segresnet", 1, 2, base_channels=4), "--base-channels 4: monai:segresnet"),
    (lambda: build_model("monai:swinunetr", 1, 2, base_channels=16), "multiple of 12"),
    (lambda: build_model("monai:swinunetr", 1, 2, base_channels=12, patch_size=48), "--patch-size"),
    (lambda: build_model("monai:unetr", 1, 2, patch_size=40), "multiple of 16"),
    (lambda: build_model("monai:unetr", 1, 2), "--patch-size"),
    (lambda: build_model("monai:unetr", 1, 2, patch_size=32, num_heads=5), "divisible by num_heads=5"),
    (lambda: build_model("monai:dynunet", 1, 2, depth=1), "depth=N"),
    (lambda: build_model("monai:dynunet", 1, 2, patch_size=16), "--patch-size 16x16: monai:dynunet"),
    (lambda: build_model("monai:basicunet", 1, 2, patch_size=12), "use --patch-size 17 or more"),
    (lambda: build_model("monai:dynunet", 1, 2, patch_size=8, depth=3, spatial_dims=3), "--patch-size 8x8x8"),
])
def test_bad_options_are_one_line_user_errors(call, expected: str) -> None:
    with pytest.raises(UserError) as info:
        call()
    assert expected in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["monai:dynunet", "monai:basicunet"])
def test_instance_norm_nets_train_just_above_the_smallest_patch(name: str) -> None:
    model = build_model(name, 1, 2, base_channels=4, patch_size=17).train()
    model(torch.randn(2, 1, 17, 17)).sum().backward()  # padded to 32: a 2 x 2 bottleneck


def _train(tmp_path, name: str, method: str, extra: list[str] = ()) -> int:
    return main([*TRAIN, "--backbone", name, "--method", method, *TINY_FLAGS[name], *extra, "--out", str(tmp_path)])


def test_dynunet_trains_with_unimatch(tmp_path) -> None:
    assert _train(tmp_path / "r", "monai:dynunet", "unimatch") == 0
    assert (tmp_path / "r" / "result.json").is_file()


# supervised, and the methods that use more of the network than its forward: UniMatch's feature perturbation,
# CPS's re-initialised copy, BCP's EMA teacher
@pytest.mark.parametrize("method", ["supervised", "unimatch", "cps", "bcp"])
@pytest.mark.parametrize("name", [n for n in MONAI if n != "monai:dynunet"])
def test_trains_one_step(tmp_path, name: str, method: str) -> None:
    assert _train(tmp_path / "r", name, method, ["--iterations", "1"]) == 0


def test_dynunet_trains_on_volumes(tmp_path) -> None:
    volumes = ["--data", "phantom:lesion_volume?n=6&size=32", "--spatial-dims", "3", "--labeled-cases", "2",
               "--iterations", "1", "--batch-size", "1", "--val-every", "1"]
    assert _train(tmp_path / "r", "monai:dynunet", "supervised", volumes) == 0


@pytest.mark.parametrize(("extra", "expected"), [
    (["--backbone-options", "depth=three"], "--backbone-options depth=three: depth=three is not of type int"),
    (["--backbone", "monai:unetr", "--patch-size", "24"], "--patch-size gives the patch 24x24"),
])
def test_bad_backbone_flags_exit_2_with_one_line(tmp_path, capsys, extra: list[str], expected: str) -> None:
    assert main([*TRAIN, "--backbone", "monai:dynunet", *extra, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_per_sample_norm_nets_are_evaluated_padded_as_they_trained() -> None:
    """A 20 x 28 image before DynUNet: evaluate pads it to the 32 px patch with black, z-scored over real pixels only."""
    from ssl_seg.data.phantoms import PhantomSource
    from ssl_seg.data.transforms import normalize
    from ssl_seg.evaluation.scoring import evaluate_model, training_pad

    torch.manual_seed(0)
    model = build_model("monai:dynunet", 1, 4, base_channels=4, depth=3).eval()
    unet = build_model("unet", 1, 4, base_channels=4)
    assert training_pad(model, 32) == 32 and training_pad(unet, 32) is None
    source = PhantomSource("cardiac", n=2, size=32, seed=0)
    source.load = (lambda load: lambda i: _cropped(load(i)))(source.load)
    got = evaluate_model(model, source, source.ids[:1], 32, torch.device("cpu"))
    sample = source.load(0)
    image = torch.from_numpy(sample.image)
    padded = torch.nn.functional.pad(image, (0, 4, 0, 12))
    valid = torch.zeros(32, 32, dtype=torch.bool)
    valid[:20, :28] = True
    with torch.no_grad():
        by_hand = model(normalize(padded, valid)[None])[0, :, :20, :28].argmax(0).numpy()
        unpadded = model(normalize(image)[None])[0].argmax(0).numpy()
    from ssl_seg.evaluation.metrics import evaluate_case

    assert got["dice"] == pytest.approx(evaluate_case(by_hand, sample.mask, 4)["dice"], abs=1e-9)
    assert (by_hand != unpadded).any()  # the padding changes what the network sees


def _cropped(sample):
    sample.image, sample.mask = sample.image[:, :20, :28], sample.mask[:20, :28]
    return sample

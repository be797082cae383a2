"""Sliding-window inference (2D and 3D): equals a whole-image forward for a pointwise model, weighting, edge cases."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ssl_seg.errors import UserError
from ssl_seg.evaluation.inference import _tile_starts, gaussian_weight, predict_probs, sliding_window_predict
from ssl_seg.models import build_model

K = 4


class Recorder(nn.Module):
    """A 1x1(x1) convolution (translation-equivariant) that records input shapes and feature_dropout."""

    def __init__(self, in_channels: int = 3, num_classes: int = K, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(in_channels, num_classes, 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(torch.randn(num_classes, generator=g))
        self.shapes: list[tuple[int, ...]] = []
        self.dropouts: list[float] = []

    def forward(self, x: Tensor, feature_dropout: float = 0.0) -> Tensor:
        self.shapes.append(tuple(x.shape))
        self.dropouts.append(feature_dropout)
        return self.conv(x)  # (B, K, *S)


class TileMean(nn.Module):
    """Logits (0, mean of the tile) at every pixel/voxel: output depends on where the tile lies."""

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True).expand(-1, 1, *x.shape[2:])  # (B, 1, *S)
        return torch.cat([torch.zeros_like(mean), mean], 1)  # (B, 2, *S)


def _image(shape: tuple[int, ...]) -> Tensor:
    """Seeded random image (B, C, *S)."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


def test_gaussian_weight_shape_peak_and_positive() -> None:
    w = gaussian_weight((16, 12))
    assert w.shape == (16, 12) and w.dtype == torch.float32
    assert w.max() == 1.0 and w[8, 6] == 1.0  # peak at (size // 2) per axis
    assert w.min() > 0
    assert w[0, 6] < w[4, 6] < w[8, 6]  # decays away from the centre
    assert torch.allclose(w[8, 6 - 3], w[8, 6 + 3])


@pytest.mark.parametrize(
    "size, patch, overlap", [(45, 16, 0.5), (37, 16, 0.25), (32, 16, 0.0), (16, 16, 0.5)]
)
def test_tile_starts_cover_exactly(size: int, patch: int, overlap: float) -> None:
    starts = _tile_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert all(0 < b - a <= patch * (1 - overlap) + 1 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_matches_whole_image_forward(overlap: float) -> None:
    model, image = Recorder(), _image((2, 3, 45, 37))  # not divisible by the patch
    whole = torch.softmax(model.conv(image), dim=1)
    probs = sliding_window_predict(model, image, 16, K, overlap=overlap, batch_size=3)
    assert probs.shape == (2, K, 45, 37) and probs.dtype == torch.float32
    assert torch.allclose(probs, whole, atol=1e-5)
    assert torch.allclose(probs.sum(1), torch.ones(2, 45, 37), atol=1e-5)
    assert all(s[0] <= 3 * 2 and s[-2:] == (16, 16) for s in model.shapes)  # batch_size tiles per call
    assert not probs.requires_grad


def test_image_smaller_than_patch() -> None:
    model, image = Recorder(), _image((1, 3, 10, 7))
    probs = sliding_window_predict(model, image, (16, 12), K)
    assert probs.shape == (1, K, 10, 7)
    assert model.shapes == [(1, 3, 16, 12)]  # one padded tile
    assert torch.allclose(probs, torch.softmax(model.conv(image), dim=1), atol=1e-5)


def test_gaussian_weighting_of_overlapping_tiles() -> None:
    # W = 24, patch 16, overlap 0.5 -> tiles at columns 0 and 8 (one row of tiles, H = 16).
    image = torch.linspace(0, 1, 24).expand(1, 1, 16, 24).contiguous()
    model = TileMean()
    probs = sliding_window_predict(model, image, 16, 2)
    p_left = torch.softmax(model(image[..., :16]), 1)[0, 1, 0, 0]
    p_right = torch.softmax(model(image[..., 8:]), 1)[0, 1, 0, 0]
    g = gaussian_weight((16, 16))[8]  # row weights cancel; only the column weight matters
    for col in (3, 10, 12, 20):
        w_left = g[col] if col < 16 else 0.0
        w_right = g[col - 8] if col >= 8 else 0.0
        expected = (w_left * p_left + w_right * p_right) / (w_left + w_right)
        assert probs[0, 1, 5, col].item() == pytest.approx(float(expected), abs=1e-6)
    assert probs[0, 1, 5, 12].item() == pytest.approx(float((p_left + p_right) / 2), abs=1e-6)


def test_feature_dropout_passed_through() -> None:
    model = Recorder()
    sliding_window_predict(model, _image((1, 3, 20, 20)), 16, K, feature_dropout=0.3)
    assert model.dropouts and all(d == 0.3 for d in model.dropouts)


def test_autocast_accumulates_float32() -> None:
    model, image = Recorder(), _image((1, 3, 40, 24))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = sliding_window_predict(model, image, 16, K)
    assert low.dtype == torch.float32
    assert torch.allclose(low, sliding_window_predict(model, image, 16, K), atol=2e-2)


def test_predict_probs_whole_or_tiled() -> None:
    image = _image((1, 3, 20, 18))
    whole_model, tiled_model = Recorder(), Recorder()
    whole = predict_probs(whole_model, image, num_classes=K)
    assert whole_model.shapes == [(1, 3, 20, 18)]
    predict_probs(whole_model, image, patch_size=20, num_classes=K)
    assert whole_model.shapes[-1] == (1, 3, 20, 18)  # fits the patch: still one whole forward
    tiled = predict_probs(tiled_model, image, patch_size=16, num_classes=K)
    assert all(s[-2:] == (16, 16) for s in tiled_model.shapes)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_bad_arguments() -> None:
    model, image = Recorder(), _image((1, 3, 20, 20))
    with pytest.raises(UserError, match="overlap"):
        sliding_window_predict(model, image, 16, K, overlap=1.0)
    with pytest.raises(UserError, match="patch_size"):
        sliding_window_predict(model, image, 0, K)
    with pytest.raises(ValueError, match="num_classes"):
        sliding_window_predict(model, image, 16, K + 1)


def test_gaussian_weight_3d_is_outer_product_of_axes() -> None:
    w = gaussian_weight((8, 6, 4))
    assert w.shape == (8, 6, 4) and w.dtype == torch.float32
    assert w[4, 3, 2] == 1.0 and w.min() > 0
    rows = [gaussian_weight((n,)) for n in (8, 6, 4)]  # 1D weights, each peak 1
    torch.testing.assert_close(w, rows[0][:, None, None] * rows[1][None, :, None] * rows[2][None, None, :])


@pytest.mark.parametrize(("patch", "overlap"), [(8, 0.5), ((8, 32, 6), 0.25), ((16, 8, 8), 0.0)])
def test_3d_matches_whole_volume_forward(patch, overlap: float) -> None:
    model, volume = Recorder(spatial_dims=3), _image((2, 3, 21, 18, 13))  # no axis divisible by the patch
    whole = torch.softmax(model.conv(volume), dim=1)
    probs = sliding_window_predict(model, volume, patch, K, overlap=overlap, batch_size=3)
    assert probs.shape == (2, K, 21, 18, 13) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, whole, atol=1e-5, rtol=1e-5)
    expected_tile = (patch,) * 3 if isinstance(patch, int) else patch
    assert len(model.shapes) > 1 and all(s[2:] == expected_tile and s[0] <= 3 * 2 for s in model.shapes)


def test_3d_gaussian_weighting_along_depth() -> None:
    # D = 24, patch 16, overlap 0.5 -> tiles at depths 0 and 8; H and W equal to the patch (one tile each).
    volume = torch.linspace(0, 1, 24)[:, None, None].expand(1, 1, 24, 16, 16).contiguous()
    model = TileMean()
    probs = sliding_window_predict(model, volume, 16, 2)
    p_front = torch.softmax(model(volume[:, :, :16]), 1)[0, 1, 0, 0, 0]
    p_back = torch.softmax(model(volume[:, :, 8:]), 1)[0, 1, 0, 0, 0]
    g = gaussian_weight((16,))
    for z in (3, 10, 12, 20):
        w_front = g[z] if z < 16 else 0.0
        w_back = g[z - 8] if z >= 8 else 0.0
        expected = (w_front * p_front + w_back * p_back) / (w_front + w_back)
        assert probs[0, 1, z, 5, 7].item() == pytest.approx(float(expected), abs=1e-6)


def test_3d_predict_probs_with_unet() -> None:
    torch.manual_seed(0)
    model = build_model("unet", 1, 3, base_channels=4, depth=2, spatial_dims=3).eval()
    volume = _image((1, 1, 12, 10, 9))
    whole = predict_probs(model, volume, patch_size=(12, 10, 9), num_classes=3)  # fits: one forward
    torch.testing.assert_close(whole, torch.softmax(model(volume), 1))
    tiled = predict_probs(model, volume, patch_size=8, num_classes=3)
    assert tiled.shape == (1, 3, 12, 10, 9)
    torch.testing.assert_close(tiled.sum(1), torch.ones(1, 12, 10, 9))
    assert not torch.allclose(tiled, whole)  # a U-Net sees different context per tile: tiling is taken


def test_patch_size_rank_must_match_image() -> None:
    with pytest.raises(UserError, match="needs 3 sizes"):
        sliding_window_predict(Recorder(spatial_dims=3), _image((1, 3, 8, 8, 8)), (4, 4), K)
    with pytest.raises(UserError, match="needs 2 sizes"):
        predict_probs(Recorder(), _image((1, 3, 8, 8)), patch_size=(4, 4, 4), num_classes=K)

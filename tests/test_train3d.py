"""3D training path: patch geometry, foreground oversampling, joint 3D augmentation, 3D CutMix / BCP boxes,
every method on volumes, and `ssl-seg train` + evaluate on the lesion_volume phantom with metrics in mm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_seg.config import RunConfig
from ssl_seg.data.patches3d import crop_padded, is_thick, patch_shape, window_starts
from ssl_seg.data.sources import open_source
from ssl_seg.data.transforms3d import VolumeTransform
from ssl_seg.engine.report import evaluate_run
from ssl_seg.engine.run_models import load_run
from ssl_seg.engine.runner import run_training
from ssl_seg.evaluation.metrics import evaluate_case
from ssl_seg.evaluation.scoring import predict_image
from ssl_seg.data.datasets import EvalDataset
from ssl_seg.methods.bcp import bcp_box
from ssl_seg.methods.cutmix import cutmix_boxes
from ssl_seg.methods.registry import method_names


def test_patch_shape_follows_spacing_and_median_size():
    assert patch_shape(32, (3.0, 1.0, 1.0), (24, 64, 64)) == (8, 32, 32)  # 32 / 3 = 10.7 slices -> 8
    assert patch_shape(48, (2.0, 1.0, 1.0), (24, 64, 64)) == (24, 48, 48)
    assert patch_shape(32, (1.0, 1.0, 1.0), (36, 35, 50)) == (32, 32, 32)
    assert patch_shape(64, (1.0, 1.0, 1.0), (36, 35, 50)) == (40, 40, 56)  # capped at the median size
    assert is_thick((3.0, 1.0, 1.0)) and not is_thick((2.0, 1.0, 1.0))


def test_crop_padded_hand_case():
    t = torch.arange(1, 13).view(1, 3, 4)  # (1, 3, 4)
    out = crop_padded(t, (-1, 2), (3, 3))
    assert out.tolist() == [[[0, 0, 0], [3, 4, 0], [7, 8, 0]]]


def test_forced_foreground_windows_contain_the_foreground():
    mask = torch.zeros(16, 40, 40, dtype=torch.long)
    mask[13, 31, 5] = 2
    torch.manual_seed(0)
    for _ in range(50):
        d, h, w = window_starts(mask, (8, 16, 16), foreground=True)
        assert d <= 13 < d + 8 and h <= 31 < h + 16 and w <= 5 < w + 16
        assert 0 <= d <= 8 and 0 <= h <= 24 and 0 <= w <= 24  # and stay inside the volume
    hits = 0
    for _ in range(200):
        d, h, w = window_starts(mask, (8, 16, 16), foreground=False)
        hits += d <= 13 < d + 8 and h <= 31 < h + 16 and w <= 5 < w + 16
    assert hits < 40  # a uniform window rarely holds one voxel


def test_about_a_third_of_patches_hold_foreground():
    image = torch.rand(1, 16, 64, 64)
    mask = torch.zeros(16, 64, 64, dtype=torch.long)
    mask[3:5, 50:52, 10:12] = 1  # 8 voxels
    transform = VolumeTransform((8, 16, 16), thick=True, augment=False)
    with_foreground = 0
    for seed in range(300):
        torch.manual_seed(seed)
        _, label, inside = transform(image, mask, torch.ones_like(mask, dtype=torch.bool))
        with_foreground += bool((label > 0).any())
        assert label.shape == (8, 16, 16) and inside.all()
    # forced: 1/3; uniform windows add about (8/16) * (16/64)^2 = 3 % of the other 2/3
    assert 0.28 < with_foreground / 300 < 0.45


def test_augmentation_moves_image_and_label_together_and_keeps_thick_slices_apart():
    transform = VolumeTransform((8, 16, 16), thick=True)
    label = torch.arange(8 * 16 * 16).view(8, 16, 16) % 3
    joint = torch.stack([label, torch.ones_like(label), torch.ones_like(label)])
    slice_id = torch.arange(8.0).view(1, 8, 1, 1).expand(1, 8, 16, 16)
    image = torch.cat([label[None].float(), slice_id])  # channel 0 = the label, channel 1 = the slice number
    for seed in range(20):
        torch.manual_seed(seed)
        img, out = transform._geometric(image, joint)
        assert torch.equal(img[0].long(), out[0])
        per_slice = img[1].flatten(1)
        assert torch.equal(per_slice.amin(1), per_slice.amax(1))  # every slice still comes from one slice
    cubic = VolumeTransform((8, 8, 8), thick=False)
    mixed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        img, _ = cubic._geometric(image[:, :, :8, :8], joint[:, :, :8, :8])
        mixed += not torch.equal(img[1].flatten(1).amin(1), img[1].flatten(1).amax(1))
    assert mixed > 0  # isotropic data also turns through the slice axis


def test_padding_is_left_out_of_roi_and_statistics():
    image = torch.rand(1, 4, 10, 10) + 5.0
    mask = torch.ones(4, 10, 10, dtype=torch.long)
    torch.manual_seed(0)
    img, label, inside = VolumeTransform((8, 16, 16), thick=True, augment=False)(image, mask,
                                                                              torch.ones(4, 10, 10, dtype=torch.bool))
    assert int(inside.sum()) == 4 * 10 * 10 and int(label.sum()) == 400
    assert img[0][inside].mean().abs() < 1e-4 and (img[0][inside].std() - 1).abs() < 1e-3


def test_3d_cutmix_and_bcp_boxes_are_cuboids_of_the_asked_size():
    g = torch.Generator().manual_seed(0)
    boxes = cutmix_boxes(64, 24, 20, "cpu", p=1.0, generator=g, depth=10)  # (B, D, H, W)
    assert boxes.shape == (64, 10, 24, 20)
    for box in boxes:
        idx = box.nonzero()
        lo, hi = idx.min(0).values, idx.max(0).values
        extent = hi - lo + 1
        assert int(box.sum()) == int(extent.prod())  # one axis-aligned cuboid
    share = boxes.float().mean(dim=(1, 2, 3))
    assert 0.005 < float(share.min()) and float(share.max()) < 0.45
    box = bcp_box(2, 9, 12, "cpu", depth=6)
    assert box.shape == (2, 6, 9, 12) and int(box[0].sum()) == 4 * 6 * 8 and torch.equal(box[0], box[1])


def _cfg(tmp_path, method: str = "supervised", iterations: int = 4) -> RunConfig:
    cfg = RunConfig()
    cfg.data.data = "phantom:lesion_volume?n=8&size=24"
    cfg.data.spatial_dims = 3
    cfg.data.patch_size = 16
    cfg.data.labeled_fraction = 0.5
    cfg.data.num_workers = 0
    cfg.model.base_channels = 4
    cfg.method.name = method
    cfg.method.options = {"pretrain_fraction": 0.5} if method == "bcp" else {}
    cfg.train.iterations = iterations
    cfg.train.batch_size = 2
    cfg.train.val_every = iterations
    cfg.train.log_every = 2
    cfg.train.image_every = 2
    cfg.train.progress = False
    cfg.out = str(tmp_path / method)
    return cfg


@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_on_volumes(tmp_path, method):
    result = run_training(_cfg(tmp_path, method, iterations=3))
    assert result["iterations"] == 3 and result["val_dice"] is not None
    model, cfg, _ = load_run(result["run_dir"])
    assert model.spatial_dims == 3 and cfg.data.spatial_dims == 3


def test_train_and_evaluate_a_volume_run_in_millimetres(tmp_path):
    cfg = _cfg(tmp_path, iterations=6)
    result = run_training(cfg)
    metrics = evaluate_run(result["run_dir"], split="test", device="cpu", postprocess=False)
    source = open_source(cfg.data.data, 3)
    model, _, _ = load_run(result["run_dir"])
    differs = 0
    for case, reported in metrics["per_sample"].items():
        item = EvalDataset(source, [case])[0]
        probs = predict_image(model, item["image"], (8, 16, 16), source.num_classes, torch.device("cpu"))
        assert probs.shape == (3, 9, 24, 24)  # the whole volume, by 3D sliding window
        pred, truth = probs.argmax(0).numpy(), item["mask"].numpy()
        in_mm = evaluate_case(pred, truth, 3, spacing=(3.0, 1.0, 1.0))
        in_voxels = evaluate_case(pred, truth, 3, spacing=(1.0, 1.0, 1.0))
        assert reported["dice"] == pytest.approx(in_mm["dice"])
        for key in ("hd95", "asd"):
            expected = None if np.isnan(in_mm[key]) else pytest.approx(in_mm[key])
            assert reported[key] == expected
        differs += not np.isnan(in_mm["hd95"]) and in_mm["hd95"] != pytest.approx(in_voxels["hd95"])
    assert differs  # the spacing made a difference, so the reported numbers are in mm


def test_cli_trains_on_volumes(tmp_path, capsys):
    from ssl_seg.cli import main

    argv = ["train", "--data", "phantom:lesion_volume?n=6&size=16", "--spatial-dims", "3", "--patch-size", "16",
            "--labeled-cases", "2",
            "--iterations", "2", "--batch-size", "2", "--base-channels", "4", "--val-every", "2", "--no-progress",
            "--num-workers", "0", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "best val Dice" in capsys.readouterr().out
    assert main(argv[:4] + ["4"] + argv[5:-1] + [str(tmp_path / "bad")]) == 2  # --spatial-dims 4


def test_elastic_warp_keeps_image_and_label_aligned_and_thick_slices_apart():
    from ssl_seg.data.transforms3d import elastic

    blocks = torch.arange(8).view(2, 2, 2).repeat_interleave(8, 0).repeat_interleave(8, 1).repeat_interleave(8, 2)
    joint = torch.stack([blocks, torch.ones_like(blocks), torch.ones_like(blocks)])  # label, roi, real
    slice_id = torch.arange(16.0).view(1, 16, 1, 1).expand(1, 16, 16, 16)
    image = torch.cat([blocks[None].float(), slice_id, torch.ones(1, 16, 16, 16)])  # label, slice number, ones
    torch.manual_seed(0)
    img, out = elastic(image, joint, in_plane=True)
    assert not torch.equal(out[0], blocks)  # it moved something
    full = (img[2] - 1).abs() < 1e-5  # voxels sampled wholly from inside the patch
    inside = full & ((img[0] - img[0].round()).abs() < 1e-4)  # away from block borders the label value is exact
    assert inside.float().mean() > 0.6 and torch.equal(img[0].round().long()[inside], out[0][inside])
    assert torch.allclose(img[1][full], slice_id[0][full], atol=1e-4)  # in-plane: no voxel changed slice
    torch.manual_seed(0)
    img3d, _ = elastic(image, joint, in_plane=False)
    full = (img3d[2] - 1).abs() < 1e-5
    assert not torch.allclose(img3d[1][full], slice_id[0][full], atol=1e-4)


def test_2d_training_on_the_3d_phantom_scores_whole_volumes(tmp_path):
    cfg = _cfg(tmp_path, iterations=3)
    cfg.data.spatial_dims, cfg.data.data, cfg.data.patch_size = 2, "phantom:lesion_volume?n=6&size=32", 32
    result = run_training(cfg)
    metrics = evaluate_run(result["run_dir"], split="test", device="cpu", postprocess=False)
    assert metrics["volume"]["n_cases"] >= 1 and metrics["n_samples"] == 12 * metrics["volume"]["n_cases"]

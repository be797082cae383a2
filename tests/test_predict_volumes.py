"""`ssl-seg predict` on a 3D run: NIfTI in, NIfTI out on the input's grid (affine, spacing, axes preserved)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_seg.cli import main
from ssl_seg.config import RunConfig
from ssl_seg.data.msd import read_unlabeled_case
from ssl_seg.data.transforms import normalize
from ssl_seg.data.volumes import to_file_axes, to_volume_axes
from ssl_seg.engine.predict_volumes import volume_inputs
from ssl_seg.engine.run_models import load_run
from ssl_seg.engine.runner import run_training
from ssl_seg.errors import UserError
from ssl_seg.evaluation.scoring import predict_image

nib = pytest.importorskip("nibabel")
_C, _S = np.cos(0.4), np.sin(0.4)
AFFINE = np.array([[0.9 * _C, 0.0, -2.8 * _S, 10.0], [0.0, 0.9, 0.0, -4.5], [0.9 * _S, 0.0, 2.8 * _C, 2.0],
                   [0.0, 0.0, 0.0, 1.0]])  # oblique, 0.9 x 0.9 x 2.8 mm


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    cfg = RunConfig()
    cfg.data.data = "phantom:lesion_volume?n=6&size=16"
    cfg.data.spatial_dims, cfg.data.patch_size, cfg.data.labeled_cases = 3, 16, 2
    cfg.data.labeled_fraction, cfg.data.num_workers = None, 0
    cfg.model.base_channels = 4
    cfg.train.iterations, cfg.train.batch_size, cfg.train.val_every, cfg.train.progress = 3, 2, 3, False
    cfg.out = str(tmp_path_factory.mktemp("run") / "run")
    return run_training(cfg)["run_dir"]


def test_predicted_volumes_keep_the_input_grid(volume_run, tmp_path):
    rng = np.random.default_rng(0)
    inputs = {"a": rng.random((20, 18, 7), dtype=np.float32), "b": rng.random((12, 15, 9), dtype=np.float32) * 300}
    (tmp_path / "in").mkdir()
    for case, array in inputs.items():
        nib.save(nib.Nifti1Image(array, AFFINE), str(tmp_path / "in" / f"{case}.nii.gz"))
    assert main(["predict", "--run", volume_run, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    model, _, info = load_run(volume_run)
    for case, array in inputs.items():
        written = nib.load(str(tmp_path / "out" / f"{case}.nii.gz"))
        np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)
        assert written.shape == array.shape and written.get_data_dtype() == np.uint8
        assert written.header.get_zooms() == pytest.approx((0.9, 0.9, 2.8))
        # the same prediction made by hand in (D, H, W) and turned back to the file's axes
        volume = read_unlabeled_case([tmp_path / "in" / f"{case}.nii.gz"], 1)
        image = normalize(torch.from_numpy(to_volume_axes(volume.image)), spatial_dims=3)
        probs = predict_image(model, image, tuple(info["patch"]), 3, torch.device("cpu"))
        np.testing.assert_array_equal(np.asarray(written.dataobj), to_file_axes(probs.argmax(0).numpy()))


def test_nnunet_channel_files_group_by_case_and_bad_inputs_are_user_errors(volume_run, tmp_path):
    vol = np.zeros((9, 9, 9), np.float32)
    for name in ("x_0000", "x_0001", "y_0000", "y_0001"):
        nib.save(nib.Nifti1Image(vol, AFFINE), str(tmp_path / f"{name}.nii.gz"))
    cases = volume_inputs(tmp_path)
    assert list(cases) == ["x", "y"] and [p.name for p in cases["y"]] == ["y_0000.nii.gz", "y_0001.nii.gz"]
    with pytest.raises(UserError, match="2 channel\\(s\\) but the model takes 1"):
        read_unlabeled_case(cases["x"], 1)
    (tmp_path / "y_0001.nii.gz").rename(tmp_path / "y_0002.nii.gz")
    with pytest.raises(UserError, match="channel 0002 of case 'y' without the channels before it"):
        volume_inputs(tmp_path)
    assert main(["predict", "--run", volume_run, "--input", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o")]) == 2

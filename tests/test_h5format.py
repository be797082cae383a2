"""Project HDF5 format: writer round trip, atomicity, validation, corrupt files, pickling for workers."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest

from ssl_seg.data.h5format import FORMAT, H5DatasetWriter, H5Source, write_source_to_h5
from ssl_seg.data.sources import open_source
from ssl_seg.data.sample import Sample
from ssl_seg.errors import UserError


def _batch(n: int, c: int = 1, h: int = 8, w: int = 6, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, c, h, w), dtype=np.float32)
    masks = rng.integers(0, k, (n, h, w))
    return images, masks


def _write(path, n=5, rois=False, c=1):
    images, masks = _batch(n, c=c)
    roi = (np.arange(8 * 6).reshape(8, 6) % 2 == 0)[None].repeat(n, 0) if rois else None
    with H5DatasetWriter(path, c, 8, 6, 3, ["bg", "a", "b"], {"made_by": "test"}) as w:
        w.append(images[:2], masks[:2], ["s0", "s1"], ["c0", "c0"], None if roi is None else roi[:2])
        w.append(images[2:], masks[2:], [f"s{i}" for i in range(2, n)], [f"c{i // 2}" for i in range(2, n)],
                 None if roi is None else roi[2:])
    return images, masks, roi


def test_round_trip_streams_all_appends(tmp_path):
    path = tmp_path / "d.h5"
    images, masks, _ = _write(path)
    src = H5Source(path)
    assert len(src) == 5 and src.in_channels == 1 and src.num_classes == 3
    assert src.class_names == ["bg", "a", "b"]
    assert src.ids == ["s0", "s1", "s2", "s3", "s4"] and src.cases == ["c0", "c0", "c1", "c1", "c2"]
    assert src.provenance == {"made_by": "test"} and src.predefined_split is None
    sample = src.load(3)
    assert sample.image.dtype == np.float32 and sample.image.shape == (1, 8, 6)
    np.testing.assert_array_equal(sample.image, images[3])
    assert sample.mask.dtype == np.int64
    np.testing.assert_array_equal(sample.mask, masks[3])
    assert sample.id == "s3" and sample.case == "c1" and sample.roi is None
    assert src.index_of("s4") == 4
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == FORMAT and f.attrs["format_version"] == 1
        assert f["images"].chunks == (1, 1, 8, 6) and f["masks"].dtype == np.uint8
        assert json.loads(f.attrs["class_names"]) == ["bg", "a", "b"]


def test_rois_round_trip_and_open_source_dispatch(tmp_path):
    path = tmp_path / "r.hdf5"
    _, _, roi = _write(path, rois=True, c=3)
    src = open_source(str(path))
    assert isinstance(src, H5Source) and src.name == str(path) and src.in_channels == 3
    got = src.load(1).roi
    assert got.dtype == bool
    np.testing.assert_array_equal(got, roi[1])


def test_exception_inside_with_leaves_no_file(tmp_path):
    path = tmp_path / "partial.h5"
    images, masks = _batch(2)
    with pytest.raises(RuntimeError, match="killed"):
        with H5DatasetWriter(path, 1, 8, 6, 3, ["bg", "a", "b"], {}) as w:
            w.append(images, masks, ["a", "b"], ["a", "b"])
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_empty_writer_is_refused_and_leaves_nothing(tmp_path):
    with pytest.raises(UserError, match="no samples"):
        with H5DatasetWriter(tmp_path / "e.h5", 1, 8, 6, 3, ["bg", "a", "b"], {}):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, match", [
    ({"images": np.zeros((2, 3, 8, 6), np.float32)}, "do not match"),           # channel mismatch
    ({"images": np.zeros((2, 1, 9, 6), np.float32)}, "do not match"),           # size mismatch
    ({"masks": np.zeros((2, 8, 5), np.int64)}, "masks of shape"),
    ({"masks": np.full((2, 8, 6), 3)}, "outside 0..2"),
    ({"images": np.full((2, 1, 8, 6), 1.5, np.float32)}, r"within \[0, 1\]"),
    ({"ids": ["x", "x"]}, "appears twice"),
    ({"ids": ["x"]}, "1 ids"),
])
def test_append_validation(tmp_path, bad, match):
    images, masks = _batch(2)
    kwargs = {"images": images, "masks": masks, "ids": ["p", "q"], "cases": ["p", "q"], **bad}
    path = tmp_path / "v.h5"
    with pytest.raises(UserError, match=match):
        with H5DatasetWriter(path, 1, 8, 6, 3, ["bg", "a", "b"], {}) as w:
            w.append(**kwargs)
    assert not path.exists()


def test_duplicate_id_across_appends_and_mixed_rois_refused(tmp_path):
    images, masks = _batch(2)
    with pytest.raises(UserError, match="'p' appears twice"):
        with H5DatasetWriter(tmp_path / "a.h5", 1, 8, 6, 3, ["bg", "a", "b"], {}) as w:
            w.append(images[:1], masks[:1], ["p"], ["p"])
            w.append(images[1:], masks[1:], ["p"], ["p"])
    with pytest.raises(UserError, match="rois for every sample"):
        with H5DatasetWriter(tmp_path / "b.h5", 1, 8, 6, 3, ["bg", "a", "b"], {}) as w:
            w.append(images[:1], masks[:1], ["p"], ["p"], np.ones((1, 8, 6), bool))
            w.append(images[1:], masks[1:], ["q"], ["q"])


def test_garbage_file_is_user_error_naming_it(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"this is not hdf5 at all" * 10)
    with pytest.raises(UserError, match=r"x\.h5.*re-create"):
        H5Source(path)
    with pytest.raises(UserError, match=r"x\.h5"):
        open_source(str(path))


def test_truncated_file_is_user_error(tmp_path):
    path = tmp_path / "t.h5"
    _write(path, n=40)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match=r"t\.h5"):
        src = H5Source(path)
        for i in range(len(src)):
            src.load(i)


def test_foreign_hdf5_and_missing_datasets_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["image"] = np.zeros((4, 4))
    with pytest.raises(UserError, match="not a medseg-lab HDF5"):
        H5Source(other)
    incomplete = tmp_path / "inc.h5"
    with h5py.File(incomplete, "w") as f:
        f.attrs.update({"format": FORMAT, "format_version": 1})
        f["images"] = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(UserError, match=r"missing dataset\(s\) \['masks', 'ids', 'cases'\]"):
        H5Source(incomplete)


def test_pickled_source_reopens_its_file(tmp_path):
    path = tmp_path / "p.h5"
    images, _, _ = _write(path)
    src = H5Source(path)
    src.load(0)  # opens a handle in this process
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.load(2).image, images[2])


class _ListSource:
    """A minimal in-memory SampleSource."""

    def __init__(self, samples, num_classes=2):
        self.samples, self.name, self.num_classes = samples, "mem", num_classes
        self.in_channels = samples[0].image.shape[0]
        self.class_names = ["background", "fg"][:num_classes]
        self.ids = [s.id for s in samples]
        self.cases = [s.case for s in samples]
        self.predefined_split = None

    def __len__(self):
        return len(self.samples)

    def load(self, i):
        return self.samples[i]


def _sample(i, h=6, roi=False):
    image = np.full((1, h, 6), i / 10, np.float32)
    mask = (np.arange(h * 6).reshape(h, 6) + i) % 2
    return Sample(image, mask, f"id{i}", f"case{i // 2}", np.ones((h, 6), bool) if roi else None)


def test_write_source_to_h5_streams_in_chunks(tmp_path):
    src = _ListSource([_sample(i) for i in range(7)])
    out = write_source_to_h5(src, tmp_path / "m.h5", {"task": "unit"}, chunk=3)
    back = H5Source(out)
    assert back.ids == src.ids and back.cases == src.cases
    assert back.provenance == {"source": "mem", "task": "unit"}
    for i in range(7):
        np.testing.assert_array_equal(back.load(i).image, src.samples[i].image)
        np.testing.assert_array_equal(back.load(i).mask, src.samples[i].mask)


def test_write_source_to_h5_refuses_mixed_sizes_and_unlabeled(tmp_path):
    mixed = _ListSource([_sample(0), _sample(1, h=8)])
    with pytest.raises(UserError, match="'id1' has shape"):
        write_source_to_h5(mixed, tmp_path / "mixed.h5", {})
    unlabeled = _ListSource([Sample(np.zeros((1, 4, 4), np.float32), None, "u", "u")])
    with pytest.raises(UserError, match="'u' has no mask"):
        write_source_to_h5(unlabeled, tmp_path / "unl.h5", {})
    assert list(tmp_path.iterdir()) == []


def test_dataloader_workers_read_after_parent_opened(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.h5"
    images, _, _ = _write(path)
    src = H5Source(path)
    src.load(0)  # the parent holds an open handle before the workers fork

    class _Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(src)

        def __getitem__(self, i):
            return torch.from_numpy(src.load(i).image)

    loader = torch.utils.data.DataLoader(_Images(), batch_size=1, num_workers=2)
    got = torch.cat([b for b in loader]).numpy()
    np.testing.assert_array_equal(got, images)


def test_phantom_source_round_trip(tmp_path):
    src = open_source("phantom:lesion?n=3&size=32&seed=2")
    back = H5Source(write_source_to_h5(src, tmp_path / "ph.h5", {"command": "make-phantoms"}))
    assert (back.ids, back.cases, back.class_names) == (src.ids, src.cases, src.class_names)
    assert back.provenance == {"source": src.name, "command": "make-phantoms"}
    np.testing.assert_array_equal(back.load(2).image, src.load(2).image)
    np.testing.assert_array_equal(back.load(2).mask, src.load(2).mask)

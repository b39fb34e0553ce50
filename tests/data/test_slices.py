import numpy as np
import pytest

from kdc.data import DataError
from kdc.data.formats.kdmri import KdmriReader
from kdc.mri.fft import fft2, ifft2
from kdc.mri.masks import MaskError, cartesian_mask
from kdc.data.slices import open_split


def test_kdmri_split_uses_the_dataset_mask_and_stored_kspace(tmp_path, write_kdmri, phantom):
    stored_mask = cartesian_mask("equispaced", 4, (24, 20), seed=3)
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "mask_4x.npy", stored_mask)
    write_kdmri(tmp_path / "train" / "a.h5", phantom(3, 24, 20, seed=1), {4: stored_mask})
    write_kdmri(tmp_path / "train" / "b.h5", phantom(2, 24, 20, seed=2), {4: stored_mask})

    dataset = open_split(tmp_path, "train", 4, mask_kind="random", mask_seed=9)
    assert len(dataset) == 5 and dataset.image_shape == (24, 20)
    assert [path.name for path in dataset.files] == ["a.h5", "b.h5"]
    np.testing.assert_array_equal(dataset.mask, stored_mask)
    item = dataset[4]
    assert (item["volume"], item["slice"]) == ("b", 1)
    assert item["kspace"].shape == (2, 24, 20) and item["kspace"].dtype == np.float32
    assert item["mask"].shape == (1, 1, 20) and item["target"].shape == (1, 24, 20)
    np.testing.assert_array_equal(item["mask"][0, 0], stored_mask[0])
    expected = fft2(item["target"][0]) * stored_mask
    np.testing.assert_allclose(item["kspace"][0] + 1j * item["kspace"][1], expected, atol=1e-6)


def test_fastmri_split_simulates_kspace_with_a_generated_mask(tmp_path, write_fastmri, phantom):
    write_fastmri(tmp_path / "val" / "file1.h5", phantom(2, 64, 36))
    dataset = open_split(tmp_path, "val", 8, mask_kind="equispaced", mask_seed=5)
    np.testing.assert_array_equal(dataset.mask, cartesian_mask("equispaced", 8, (64, 36), 5))
    item = dataset[0]
    kspace = item["kspace"][0] + 1j * item["kspace"][1]
    np.testing.assert_allclose(kspace, fft2(item["target"][0]) * dataset.mask, atol=1e-6)
    zero_filled = ifft2(kspace).real
    assert 0 < np.abs(zero_filled - item["target"][0]).max()  # undersampling changed the image


def test_non_cartesian_mask_is_given_whole(tmp_path, write_kdmri, phantom):
    mask = (np.random.default_rng(0).random((16, 16)) < 0.3).astype(np.float32)
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "mask_5x.npy", mask)
    write_kdmri(tmp_path / "train" / "a.h5", phantom(1, 16, 16))
    item = open_split(tmp_path, "train", 5)[0]
    np.testing.assert_array_equal(item["mask"], mask[None])


def test_slices_are_read_one_at_a_time(tmp_path, write_kdmri, phantom, monkeypatch):
    write_kdmri(tmp_path / "train" / "a.h5", phantom(3, 16, 16))
    dataset = open_split(tmp_path, "train", 4)
    reads = []
    real_read = KdmriReader.read
    monkeypatch.setattr(KdmriReader, "read", lambda self, file, slices, acc=None: reads.append(slices)
                        or real_read(self, file, slices, acc))
    for index in (0, 2, 1):
        assert dataset[index]["slice"] == index
    assert reads == [slice(0, 1), slice(2, 3), slice(1, 2)]  # one slice per item, no volume cache


def test_items_collate_with_torch(tmp_path, write_kdmri, phantom):
    torch = pytest.importorskip("torch")
    write_kdmri(tmp_path / "train" / "a.h5", phantom(4, 16, 16))
    batch = next(iter(torch.utils.data.DataLoader(open_split(tmp_path, "train", 4), batch_size=2)))
    assert batch["kspace"].shape == (2, 2, 16, 16) and batch["mask"].shape == (2, 1, 1, 16)
    assert batch["kspace"].dtype == torch.float32 and batch["slice"].tolist() == [0, 1]


def test_demo_is_a_dataset():
    train, val = open_split("demo", "train", 4), open_split("demo", "val", 4)
    assert (len(train), len(val)) == (80, 40)
    assert train.image_shape == val.image_shape == (128, 128)
    assert {path.stem for path in train.files}.isdisjoint(path.stem for path in val.files)
    target = val[20]["target"]
    assert target.dtype == np.float32 and 0 <= target.min() and target.max() <= 1


def test_bad_datasets(tmp_path, write_kdmri, phantom):
    with pytest.raises(DataError, match="nowhere: dataset directory not found"):
        open_split(tmp_path / "nowhere", "train", 4)
    with pytest.raises(DataError, match="split 'train' not found"):
        open_split(tmp_path, "train", 4)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="split 'train' holds no .h5 volumes"):
        open_split(tmp_path, "train", 4)
    write_kdmri(tmp_path / "train" / "a.h5", phantom(1, 16, 16))
    with pytest.raises(MaskError, match=r"unknown acceleration 6x: expected one of \[4, 5, 8\], or give its centre"):
        open_split(tmp_path, "train", 6)
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "mask_4x.npy", cartesian_mask("random", 4, (16, 12)))
    with pytest.raises(MaskError, match=r"mask_4x.npy: mask shape \(16, 12\) does not match image shape \(16, 16\)"):
        open_split(tmp_path, "train", 4)
    np.save(tmp_path / "masks" / "mask_5x.npy", np.array([{"pickled": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MaskError, match="mask_5x.npy: not a numeric .npy array"):
        open_split(tmp_path, "train", 5)

import os

import h5py
import numpy as np
import pytest

from kdc.data import DataError
from kdc.data.formats.kdmri import KdmriReader
from kdc.mri.fft import fft2, ifft2
from kdc.mri.masks import MaskError, cartesian_mask
from kdc.data.slices import open_split
from kdc.data.volumes import stats_cache_dir
from kdc.mri.coils import compress_coils
from kdc.mri.layout import from_channels
from tests.conftest import make_phantom


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
    monkeypatch.setattr(KdmriReader, "read", lambda self, file, slices, acc=None, **kw: reads.append(slices)
                        or real_read(self, file, slices, acc, **kw))
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


def zero_filled(item):
    return np.abs(ifft2(from_channels(item["kspace"])))


def psnr(reference, image):
    return 10 * np.log10(reference.max() ** 2 / np.mean((reference - image) ** 2))


@pytest.mark.parametrize("axis", [-1, -2])
def test_kdmri_without_masks_uses_the_mask_of_its_stored_kspace(tmp_path, write_kdmri, phantom, axis):
    """Issue 10 item 2: the stored k-space was multiplied by a newly drawn mask (only the overlap survived)."""
    images = phantom(3, 32, 32, seed=4)
    stored_mask = cartesian_mask("random", 4, (32, 32), seed=3, axis=axis)
    path = write_kdmri(tmp_path / "train" / "a.h5", images, {4: stored_mask})
    dataset = open_split(tmp_path, "train", 4, mask_kind="random", mask_seed=9)  # no ROOT/masks
    np.testing.assert_array_equal(dataset.mask, stored_mask)
    import h5py

    with h5py.File(path, "r") as file:
        stored_zero_filled = np.moveaxis(file["img_volus_4"][()], -1, 0) / images.max()
    for index in range(3):
        item = dataset[index]
        assert np.isclose(psnr(item["target"][0], zero_filled(item)), psnr(item["target"][0], stored_zero_filled[index]),
                          atol=1e-3)
    assert dataset[0]["mask"].shape == ((1, 1, 32) if axis == -1 else (1, 32, 1))


def test_stored_kspace_with_different_masks_is_refused(tmp_path, write_kdmri, phantom):
    write_kdmri(tmp_path / "train" / "a.h5", phantom(1, 16, 16), {4: cartesian_mask("random", 4, (16, 16), 1)})
    write_kdmri(tmp_path / "train" / "b.h5", phantom(1, 16, 16), {4: cartesian_mask("random", 4, (16, 16), 2)})
    with pytest.raises(DataError, match=r"b.h5: its 'kspace_volus_4' was not undersampled with the mask of a.h5; "
                                        r"supply the training mask as ROOT/masks/mask_4x.npy"):
        open_split(tmp_path, "train", 4)


def test_files_of_different_widths_are_padded_to_a_common_size(tmp_path, write_fastmri, phantom, capsys):
    """Issue 10 item 7: one split of fastMRI files 368 and 372 wide."""
    narrow, wide = phantom(1, 64, 36, seed=1), phantom(1, 64, 40, seed=2)
    write_fastmri(tmp_path / "train" / "a.h5", narrow)
    write_fastmri(tmp_path / "train" / "b.h5", wide)
    write_fastmri(tmp_path / "val" / "c.h5", phantom(1, 64, 36, seed=3))
    train, val = open_split(tmp_path, "train", 4), open_split(tmp_path, "val", 4)
    assert train.image_shape == val.image_shape == (64, 40)
    padded = np.zeros((64, 40), np.float32)
    padded[:, 2:38] = narrow[0] / narrow.max()
    np.testing.assert_allclose(train[0]["target"][0], padded, atol=1e-5)
    np.testing.assert_allclose(train[1]["target"][0], wide[0] / wide.max(), atol=1e-5)
    assert capsys.readouterr().err.count("zero-padded (centred) to 64x40") == 1


def test_crop_gives_fastmri_centre_targets(tmp_path, write_fastmri, phantom):
    images = phantom(1, 400, 340)
    write_fastmri(tmp_path / "val" / "a.h5", images)
    item = open_split(tmp_path, "val", 4, crop=(320, 320))[0]
    assert item["target"].shape == (1, 320, 320) and item["kspace"].shape == (2, 400, 340)
    np.testing.assert_allclose(item["target"][0], images[0, 40:360, 10:330] / images.max(), atol=1e-5)


def test_acceleration_beyond_the_table_with_a_centre_fraction(tmp_path, write_kdmri, phantom):
    write_kdmri(tmp_path / "train" / "a.h5", phantom(1, 32, 200))
    dataset = open_split(tmp_path, "train", 6, mask_kind="equispaced", center_fraction=0.07)
    lines = np.fft.fftshift(dataset.mask[0])
    assert lines[93:107].all() and 5 < dataset.mask.size / dataset.mask.sum() < 7


def multicoil_volume(slices=2, coils=4, shape=(48, 40)):
    from kdc.mri.simulate import complex_coil_images

    return complex_coil_images(make_phantom(slices, *shape), coils, seed=0)


def test_multicoil_complex_targets_are_the_scaled_virtual_coil_image(tmp_path, write_fastmri_multicoil, capsys):
    coil_images = multicoil_volume()
    write_fastmri_multicoil(tmp_path / "train" / "a.h5", coil_images)
    dataset = open_split(tmp_path, "train", 4, image="complex")
    items = [dataset[index] for index in range(len(dataset))]
    targets = np.stack([from_channels(item["target"]) for item in items])
    assert targets.shape == (2, 48, 40) and np.isclose(np.abs(targets).max(), 1, atol=1e-5)
    virtual = np.abs(ifft2(compress_coils(fft2(coil_images))[:, 0]))
    np.testing.assert_allclose(np.abs(targets), virtual / virtual.max(), atol=1e-4)
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1)) / virtual.max()
    inside = rss > 0.1 * rss.max()
    assert np.all(np.abs(targets) <= rss + 1e-4) and np.median(np.abs(targets)[inside] / rss[inside]) > 0.8
    for item, target in zip(items, targets):  # the measured k-space is the target's, undersampled (with phase)
        np.testing.assert_allclose(from_channels(item["kspace"]), fft2(target) * dataset.mask, atol=1e-5)
        assert np.abs(target.imag).max() > 0.1
    assert capsys.readouterr().err == ""  # complex models keep the phase: no notice


def test_measured_phase_is_dropped_for_magnitude_models_with_one_notice(tmp_path, write_fastmri, phantom, capsys):
    """Issue 10 item 3: the fastMRI reader discards the measured phase; it says so once."""
    write_fastmri(tmp_path / "train" / "a.h5", phantom(2, 32, 24))
    write_fastmri(tmp_path / "train" / "b.h5", phantom(2, 32, 24, seed=1))
    dataset = open_split(tmp_path, "train", 4)
    item = dataset[0]
    np.testing.assert_allclose(from_channels(item["kspace"]), fft2(item["target"][0]) * dataset.mask, atol=1e-5)
    err = capsys.readouterr().err
    assert err.count("k-space with measured phase (fastmri)") == 1 and "phase is dropped" in err


def test_dataloader_workers_read_the_same_items(tmp_path, write_fastmri_multicoil):
    torch = pytest.importorskip("torch")
    for name in ("a", "b"):
        write_fastmri_multicoil(tmp_path / "train" / f"{name}.h5", multicoil_volume(slices=3))
    dataset = open_split(tmp_path, "train", 4, image="complex")
    serial = [batch["target"] for batch in torch.utils.data.DataLoader(dataset, batch_size=2)]
    # spawn: earlier tests load onnxruntime/OpenVINO into this process, whose threads do not survive a fork (the
    # forked worker crashes); spawned workers also prove the dataset pickles without its open h5 handles.
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    parallel = [batch["target"] for batch in loader]
    assert len(serial) == 3 and all(torch.equal(a, b) for a, b in zip(serial, parallel))
    assert dataset._handles  # the parent process still has its own handles; workers opened theirs


def test_volume_statistics_are_cached_per_version_of_the_file(tmp_path, write_fastmri_multicoil):
    """Opening a split again reads each volume's scale and coil matrix from the cache; a rewritten file (new
    modification time) is streamed again."""
    path = write_fastmri_multicoil(tmp_path / "train" / "a.h5", multicoil_volume())
    before = set(stats_cache_dir().glob("*.npz"))
    first = open_split(tmp_path, "train", 4, image="complex")
    (entry,) = set(stats_cache_dir().glob("*.npz")) - before  # this file's statistics
    with entry.open("wb") as handle:  # a cache that says twice the scale halves the targets: it is what is read
        np.savez(handle, scale=np.float64(2 * first.stats[0].scale), coil_matrix=first.stats[0].coil_matrix)
    again = open_split(tmp_path, "train", 4, image="complex")
    np.testing.assert_allclose(again[0]["target"], first[0]["target"] / 2, atol=1e-6)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    rewritten = open_split(tmp_path, "train", 4, image="complex")
    assert rewritten.stats[0].scale == first.stats[0].scale


def test_a_slice_that_turns_non_finite_after_opening_is_refused(tmp_path, write_fastmri_multicoil):
    path = write_fastmri_multicoil(tmp_path / "train" / "a.h5", multicoil_volume())
    dataset = open_split(tmp_path, "train", 4, image="complex")
    with h5py.File(path, "r+") as file:  # one sample of one coil of slice 1
        file["kspace"][1, 2, 5, 5] = np.nan
    dataset[0]
    with pytest.raises(DataError, match=r"a\.h5: slice 1 holds NaN or Inf \(fastmri-multicoil data\)"):
        dataset[1]

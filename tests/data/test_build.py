import hashlib
import json

import h5py
import numpy as np
import pytest

from kdc.data import DataError, build
from kdc.errors import KdcError
from kdc.data.build import BuildSettings, Source, VolumeInput, build_dataset, load_slices, resolve_inputs
from kdc.mri.fft import fft2, ifft2, ifft2c
from kdc.mri.masks import cartesian_mask
from kdc.data.slices import open_split


@pytest.fixture
def head(phantom):
    """``(X, Y, Z)`` uint8 volume whose first and last 3 axial slices are empty."""
    volume = np.moveaxis(phantom(14, 22, 18), 0, -1)  # (X, Y, Z) = (22, 18, 14)
    volume[..., :3] = volume[..., -3:] = 0
    return (volume * 200).astype(np.uint8)


@pytest.fixture
def volumes(tmp_path, write_nifti, head):
    return [
        VolumeInput(name, write_nifti(tmp_path / f"{name}.nii.gz", np.roll(head, shift, axis=0)))
        for shift, name in enumerate(["a", "b", "c"])
    ]


SMALL = BuildSettings(shape=(24, 24), accelerations=(4, 8))


def read(path, key):
    with h5py.File(path, "r") as file:
        return file[key][()]


def test_build_writes_kdmri_files_split_by_volume(tmp_path, volumes):
    out = tmp_path / "data"
    manifest = build_dataset(out, volumes, SMALL, progress=False)

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        ".kdc-output", "dataset.json", "masks/mask_4x.npy", "masks/mask_8x.npy", "train/a.h5", "train/b.h5", "val/c.h5",
    ]
    for acc in (4, 8):
        mask = np.load(out / "masks" / f"mask_{acc}x.npy")
        np.testing.assert_array_equal(mask, cartesian_mask("random", acc, (24, 24), 0))
        volfs, kspace = read(out / "val/c.h5", "volfs"), read(out / "val/c.h5", f"kspace_volus_{acc}")
        assert volfs.shape == kspace.shape == (24, 24, 8) and volfs.max() == 1
        expected = np.moveaxis(fft2(np.moveaxis(volfs, -1, 0)) * mask, 0, -1)
        np.testing.assert_allclose(kspace, expected, atol=1e-5)
        zero_filled = np.moveaxis(np.abs(ifft2(np.moveaxis(kspace, -1, 0))), 0, -1)
        np.testing.assert_allclose(read(out / "val/c.h5", f"img_volus_{acc}"), zero_filled, atol=1e-5)

    assert json.loads((out / "dataset.json").read_text()) == manifest
    record = manifest["volumes"][2]
    assert record["slice_indices"] == list(range(3, 11))  # the empty first and last slices are dropped
    assert record["sha256"] == hashlib.sha256(volumes[2].path.read_bytes()).hexdigest()
    assert manifest["slices"] == {"train": 16, "val": 8} and manifest["image_size"] == [24, 24]
    dataset = open_split(out, "val", 8)
    np.testing.assert_array_equal(dataset.mask, np.load(out / "masks" / "mask_8x.npy"))
    item = dataset[0]
    np.testing.assert_allclose(item["kspace"][0] + 1j * item["kspace"][1], kspace[..., 0], atol=1e-6)


def test_targets_only_float16_with_fewer_slices(tmp_path, volumes):
    settings = BuildSettings(shape=(20, 30), slices_per_volume=3, dtype="float16", targets_only=True, val_volumes=2)
    manifest = build_dataset(tmp_path / "d", volumes, settings, progress=False)
    with h5py.File(tmp_path / "d/val/b.h5", "r") as file:
        assert list(file) == ["volfs"] and file["volfs"].dtype == np.float16 and file["volfs"].shape == (20, 30, 3)
    assert not (tmp_path / "d/masks").exists()
    assert manifest["volumes"][0]["slice_indices"] == [3, 7, 10]
    assert len(open_split(tmp_path / "d", "val", 5)) == 6


def test_orientation_is_read_from_the_affine(tmp_path, write_nifti, head):
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])  # LAS: the same head stored with x reversed
    inputs = [
        VolumeInput("ras", write_nifti(tmp_path / "ras.nii", head)),
        VolumeInput("las", write_nifti(tmp_path / "las.nii", head[::-1].copy(), flipped)),
    ]
    build_dataset(tmp_path / "d", inputs, SMALL, progress=False)
    np.testing.assert_array_equal(read(tmp_path / "d/train/ras.h5", "volfs"), read(tmp_path / "d/val/las.h5", "volfs"))


@pytest.mark.parametrize(("axis", "slices"), [("axial", 14), ("coronal", 18), ("sagittal", 22)])
def test_slice_axis(tmp_path, volumes, axis, slices):
    settings = BuildSettings(shape=(16, 16), axis=axis, min_foreground=0.0, targets_only=True)
    manifest = build_dataset(tmp_path / "d", volumes, settings, progress=False)
    assert manifest["volumes"][0]["slices"] == slices


def test_training_volumes_in_every_train_axis(tmp_path, volumes):
    settings = BuildSettings(shape=(16, 16), train_axes=("axial", "sagittal", "coronal"), min_foreground=0.0,
                             targets_only=True)
    manifest = build_dataset(tmp_path / "d", volumes, settings, progress=False)

    files = sorted(p.relative_to(tmp_path / "d").as_posix() for p in (tmp_path / "d").rglob("*.h5"))
    assert files == [f"train/{name}-{axis}.h5" for name in "ab" for axis in ("axial", "coronal", "sagittal")] + [
        "val/c.h5"]
    assert [(r["name"], r["axis"], r["slices"]) for r in manifest["volumes"][:3]] == [
        ("a-axial", "axial", 14), ("a-sagittal", "sagittal", 22), ("a-coronal", "coronal", 18)]
    assert manifest["slices"] == {"train": 2 * (14 + 22 + 18), "val": 14}
    assert manifest["train_axes"] == ["axial", "sagittal", "coronal"] and manifest["axis"] == "axial"
    sagittal = open_split(tmp_path / "d", "train", 4)  # every orientation is fitted to the one image size
    assert len(sagittal) == 108 and sagittal.image_shape == (16, 16)


def test_sources_are_found_without_importing_their_package(tmp_path, monkeypatch, write_nifti, head):
    package = tmp_path / "site" / "kdcfakebrains"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    write_nifti(package / "data" / "t1.nii.gz", head)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(build, "SOURCES", {
        "fake": Source("kdcfakebrains", "data/t1.nii.gz", "a test head", "pip install kdcfakebrains"),
        "absent": Source(None, str(tmp_path / "none.nii.gz"), "not installed", "apt-get install absent-data"),
    })

    inputs = resolve_inputs([], [])
    assert [(item.name, item.path) for item in inputs] == [("fake", package / "data" / "t1.nii.gz")]
    assert inputs[0].origin["package"] == "kdcfakebrains"
    with_volume = resolve_inputs(["fake"], [package / "data" / "t1.nii.gz"])
    assert [item.name for item in with_volume] == ["fake", "t1"]  # sources first, user volumes last (val)
    with pytest.raises(DataError, match="--source absent: .*none.nii.gz not found; install it: apt-get install absent"):
        resolve_inputs(["absent"], [])
    with pytest.raises(DataError, match=r"--source 'nope': unknown source, expected one of \['absent', 'fake'\]"):
        resolve_inputs(["nope"], [])


def test_no_source_names_how_to_install_one(monkeypatch):
    monkeypatch.setattr(build, "SOURCES", {})
    with pytest.raises(DataError, match=r"no source volume found: .*pip install --no-deps nilearn==0.14.1"):
        resolve_inputs([], [])


def test_duplicate_volume_names_get_a_suffix(tmp_path, volumes):
    assert [item.name for item in resolve_inputs([], [volumes[0].path] * 2)] == ["a", "a_2"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (BuildSettings(val_volumes=3), r"--val-volumes 3: expected 1 to 2 of the 3 volume\(s\)"),
        (BuildSettings(accelerations=(4, 6)), r"unknown acceleration 6x"),
        (BuildSettings(axis="oblique"), r"--axis 'oblique'"),
        (BuildSettings(train_axes=("axial", "oblique")), r"--train-axis 'oblique'"),
        (BuildSettings(dtype="int8"), r"--dtype 'int8'"),
        (BuildSettings(mask_kind="radial"), r"--mask-kind 'radial'"),  # type: ignore[arg-type]
        (BuildSettings(min_foreground=0.99), r"a.nii.gz: no slice has 99% foreground"),
    ],
)
def test_bad_settings(tmp_path, volumes, settings, message):
    with pytest.raises(KdcError, match=message):
        build_dataset(tmp_path / "d", volumes, settings, progress=False)
    assert list(tmp_path.glob(".d*")) == [] and not (tmp_path / "d").exists()


def test_a_failed_build_leaves_nothing_and_a_good_one_needs_overwrite(tmp_path, volumes):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="broken.nii.gz: not a readable NIfTI volume"):
        build_dataset(tmp_path / "d", [*volumes[:2], VolumeInput("broken", broken)], SMALL, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz", "broken.nii.gz", "c.nii.gz"]

    build_dataset(tmp_path / "d", volumes[:2], SMALL, progress=False)
    with pytest.raises(DataError, match="directory exists and is not empty; pass --overwrite"):
        build_dataset(tmp_path / "d", volumes, SMALL, progress=False)
    build_dataset(tmp_path / "d", volumes, SMALL, overwrite=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "d/train").iterdir()) == ["a.h5", "b.h5"]
    assert (tmp_path / "d/val/c.h5").is_file() and not list(tmp_path.glob(".d*"))


def test_4d_volumes_are_refused(tmp_path, write_nifti):
    path = write_nifti(tmp_path / "epi.nii.gz", np.ones((8, 8, 4, 2), np.float32))
    with pytest.raises(DataError, match=r"epi.nii.gz: expected a 3-D volume, got shape \(8, 8, 4, 2\)"):
        build_dataset(tmp_path / "d", [VolumeInput("x", path), VolumeInput("y", path)], SMALL, progress=False)


def test_complex_multicoil_build_writes_fastmri_files_the_readers_take(tmp_path, volumes):
    settings = BuildSettings(shape=(24, 20), accelerations=(4,), complex_images=True, coils=4)
    manifest = build_dataset(tmp_path / "mc", volumes, settings, progress=False)
    assert (manifest["layout"], manifest["coils"], manifest["complex"]) == ("fastmri-multicoil", 4, True)
    path = tmp_path / "mc" / "train" / "a.h5"
    kspace = read(path, "kspace")
    assert kspace.shape[1:] == (4, 24, 20) and kspace.dtype == np.complex64
    assert read(path, "reconstruction_rss").shape[1:] == (24, 20)
    coil_images = ifft2c(kspace)
    assert np.abs(np.angle(coil_images[:, 0][np.abs(coil_images[:, 0]) > 0.1])).std() > 0.1  # phase is not flat
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1))
    magnitude = open_split(tmp_path / "mc", "train", 4)
    assert np.corrcoef(magnitude[0]["target"][0].ravel(), (rss[0] / rss.max()).ravel())[0, 1] > 0.95
    complex_split = open_split(tmp_path / "mc", "train", 4, image="complex")
    assert complex_split[0]["target"].shape == (2, 24, 20)
    np.testing.assert_array_equal(complex_split.mask, np.load(tmp_path / "mc" / "masks" / "mask_4x.npy"))
    from kdc.runtime.readers import read_input  # kdc reconstruct reads what kdc data build writes, header included

    volume = next(read_input(path))
    assert volume.kspace.shape[1:] == (4, 24, 20) and volume.geometry.spacing[:2] == (1.0, 1.0)


def test_acceleration_beyond_the_table_is_built_with_its_centre_fraction(tmp_path, volumes):
    with pytest.raises(KdcError, match="unknown acceleration 6x"):
        build_dataset(tmp_path / "no", volumes, BuildSettings(shape=(24, 24), accelerations=(6,)), progress=False)
    settings = BuildSettings(shape=(24, 60), accelerations=(6,), center_fraction=0.07, mask_kind="equispaced")
    manifest = build_dataset(tmp_path / "six", volumes, settings, progress=False)
    mask = np.load(tmp_path / "six" / "masks" / "mask_6x.npy")
    assert np.fft.fftshift(mask[0])[28:32].all() and 5 < mask.size / mask.sum() < 7  # 4 = round(60 * 0.07)
    assert manifest["center_fraction"] == 0.07 and len(open_split(tmp_path / "six", "val", 6)) > 0


def nifti_of_zeros(path, shape):
    """A gzip NIfTI of float32 zeros of ``shape``, compressed a slice at a time (never held in memory)."""
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    with gzip.open(path, "wb", compresslevel=9) as file:
        file.write(header.binaryblock + b"\0" * 4)  # vox_offset 352
        for _ in range(shape[-1]):
            file.write(bytes(4 * shape[0] * shape[1]))
    return path


def test_nifti_sizes_are_checked_from_the_header_before_reading(tmp_path, monkeypatch):
    bomb = nifti_of_zeros(tmp_path / "bomb.nii.gz", (512, 512, 160))  # 168 MB of zeros in 160 kB
    with pytest.raises(DataError, match=r"bomb.nii.gz: NIfTI voxels declares 168 MB but stores 1\d\d kB: unwritten "
                                        "data or a decompression bomb"):
        load_slices(bomb, "axial", (32, 32))
    monkeypatch.setenv("KDC_MAX_INPUT_BYTES", "1M")
    with pytest.raises(DataError, match=r"bomb.nii.gz: NIfTI header declares 512 x 512 x 160 values \(168 MB in "
                                        r"memory\), above the input limit of 1.05 MB"):
        load_slices(bomb, "axial", (32, 32))

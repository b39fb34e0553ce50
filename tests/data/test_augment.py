import numpy as np
import pytest
from torch.utils.data import DataLoader

from kdc.data import DataError
from kdc.data.augment import AUGMENTATIONS, BIAS_STRENGTH, GAMMA_RANGE, NOISE_SNR_DB, Augmenter
from kdc.data.slices import open_split
from kdc.mri.fft import fft2, ifft2
from kdc.errors import KdcError
from kdc.mri.masks import acceleration_of, cartesian_mask


def orientations(image: np.ndarray) -> list[np.ndarray]:
    """The 8 images a square image becomes under flips and quarter turns."""
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.flip(turn, 0) for turn in turns]


def test_draws_depend_on_seed_epoch_and_index_only():
    image = np.arange(16.0).reshape(4, 4)
    first, again = Augmenter(["flip", "rot90"], seed=1), Augmenter(["flip", "rot90"], seed=1)
    draws = [first(image, index)[0] for index in range(40)]
    np.testing.assert_array_equal(np.stack(draws), np.stack([again(image, index)[0] for index in range(40)]))
    assert {draw.tobytes() for draw in draws} == {view.tobytes() for view in orientations(image)}
    first.epoch = 1
    assert any(not np.array_equal(first(image, index)[0], draw) for index, draw in enumerate(draws))
    assert Augmenter(["flip"], seed=2).names == ("flip",)


def test_unknown_names_and_shapes_a_transform_cannot_take_are_refused():
    with pytest.raises(DataError, match=r"--augment 'mirror': expected one of \['bias', 'flip', 'gamma', 'noise', "
                                        r"'rot90', 'scale'\]"):
        Augmenter(["flip", "mirror"])
    with pytest.raises(DataError, match="--augment rot90: needs square images, the data has 24x20"):
        Augmenter(["rot90"]).check_shape((24, 20))
    Augmenter(["flip"]).check_shape((24, 20))
    assert sorted(AUGMENTATIONS) == ["bias", "flip", "gamma", "noise", "rot90", "scale"]


def test_scale_multiplies_the_image_by_a_factor_between_a_half_and_one():
    image = np.full((4, 4), 0.8, dtype=np.float32)
    factors = [Augmenter(["scale"], seed=0)(image, index)[0][0, 0] / 0.8 for index in range(200)]
    assert 0.5 <= min(factors) < 0.55 and 0.95 < max(factors) <= 1.0
    assert Augmenter(["scale"])(image, 0)[0].dtype == np.float32


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_transform_is_seeded_by_seed_epoch_and_index(name):
    image = np.random.default_rng(0).random((8, 8)).astype(np.float32)

    def draws(seed: int, epoch: int) -> list[bytes]:
        augment = Augmenter([name], seed=seed)
        augment.epoch = epoch
        return [b"".join(array.tobytes() for array in augment(image, index)) for index in range(12)]

    assert draws(1, 2) == draws(1, 2)
    assert len(set(draws(1, 2))) >= 3  # a draw per slice (flip and rot90 have 4 outcomes)
    assert draws(1, 2) != draws(1, 3) and draws(1, 2) != draws(0, 2)


def snr_db(image: np.ndarray, noise: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.abs(image) ** 2)) / np.sqrt(np.mean(np.abs(noise) ** 2))))


def test_noise_is_added_to_the_kspace_at_the_stated_snr_and_the_target_stays_clean():
    image = np.clip(np.random.default_rng(0).random((64, 64)) * 1.5, 0, 1).astype(np.float32)
    augment = Augmenter(["noise"], seed=0)
    measured = []
    for index in range(100):
        target, kspace = augment(image, index)
        np.testing.assert_array_equal(target, image)
        noise = kspace - fft2(image)
        measured.append(snr_db(image, noise))
        assert abs(np.mean(noise.real ** 2) / np.mean(noise.imag ** 2) - 1) < 0.2  # complex: both parts alike
        assert np.isclose(snr_db(image, ifft2(noise)), measured[-1])  # white: the same SNR in the image
    low, high = NOISE_SNR_DB
    assert low - 0.3 < min(measured) < low + 2 and high - 2 < max(measured) < high + 0.3
    assert abs(np.mean(measured) - (low + high) / 2) < 2  # uniform in dB


def test_gamma_raises_the_magnitude_to_a_power_in_range_and_keeps_the_phase():
    magnitude = np.linspace(0.01, 1, 64, dtype=np.float32).reshape(8, 8)
    image = (magnitude * np.exp(1j * np.linspace(-3, 3, 64).reshape(8, 8))).astype(np.complex64)
    gammas = []
    for index in range(100):
        out = Augmenter(["gamma"], seed=0)(image, index)[0]
        assert out.dtype == np.complex64
        np.testing.assert_allclose(np.angle(out), np.angle(image), atol=1e-5)
        inside = magnitude < 0.9  # log 1 = 0
        gamma = np.log(np.abs(out[inside])) / np.log(magnitude[inside])
        assert np.ptp(gamma) < 1e-3
        gammas.append(float(np.median(gamma)))
        assert np.isclose(np.abs(out).max(), 1.0)  # the normalised maximum stays 1
    assert GAMMA_RANGE[0] <= min(gammas) < 0.75 and 1.4 < max(gammas) <= GAMMA_RANGE[1]
    assert Augmenter(["gamma"])(np.zeros((4, 4), np.float32), 0)[0].tolist() == np.zeros((4, 4)).tolist()


def test_bias_multiplies_by_a_smooth_low_order_field():
    image = np.full((32, 24), 0.5, dtype=np.float32)
    y, x = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 24), indexing="ij")
    terms = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1).reshape(-1, 6)
    fields = []
    for index in range(20):
        field = Augmenter(["bias"], seed=0)(image, index)[0] / 0.5
        coefficients, *_ = np.linalg.lstsq(terms, np.log(field).ravel(), rcond=None)
        np.testing.assert_allclose(terms @ coefficients, np.log(field).ravel(), atol=1e-5)  # exp of a quadratic
        assert np.all(np.abs(coefficients[1:]) <= BIAS_STRENGTH + 1e-4) and abs(coefficients[0]) < 1e-4
        fields.append(field)
    assert 0.1 < np.mean([f.max() / f.min() - 1 for f in fields]) < 1.0  # visible shading, not a different image


def test_augmented_items_simulate_kspace_from_the_transformed_image(tmp_path, write_kdmri, phantom):
    mask = cartesian_mask("random", 4, (16, 16), seed=3)
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "mask_4x.npy", mask)
    write_kdmri(tmp_path / "train" / "a.h5", phantom(3, 16, 16, seed=1), {4: mask})  # stored k-space, not read
    plain = open_split(tmp_path, "train", 4)
    augmented = open_split(tmp_path, "train", 4, augment=Augmenter(["flip", "rot90"], seed=0))
    assert plain.deterministic and not augmented.deterministic

    seen = set()
    for epoch in range(6):
        augmented.set_epoch(epoch)
        for index in range(len(plain)):
            item, original = augmented[index], plain[index]["target"][0]
            target = item["target"][0]
            assert any(np.array_equal(target, view) for view in orientations(original))
            np.testing.assert_allclose(item["kspace"][0] + 1j * item["kspace"][1], fft2(target) * mask, atol=1e-6)
            np.testing.assert_array_equal(item["mask"], plain[index]["mask"])  # the acquisition never changes
            seen.add((index, target.tobytes()))
    assert len(seen) > 3 * len(plain)  # the draws change with the epoch

    augmented.set_epoch(2)
    in_workers = next(iter(DataLoader(augmented, batch_size=3, num_workers=2)))["target"]
    np.testing.assert_array_equal(in_workers.numpy(), np.stack([augmented[i]["target"] for i in range(3)]))


def test_rot90_on_non_square_data_is_refused_when_the_split_opens(tmp_path, write_fastmri, phantom):
    write_fastmri(tmp_path / "train" / "a.h5", phantom(1, 24, 20))
    with pytest.raises(DataError, match="--augment rot90: needs square images, the data has 24x20"):
        open_split(tmp_path, "train", 4, augment=Augmenter(["rot90"]))


def test_random_masks_differ_per_slice_and_epoch_are_reproducible_and_hit_the_acceleration(tmp_path, write_fastmri,
                                                                                         phantom):
    write_fastmri(tmp_path / "train" / "a.h5", phantom(6, 32, 40, seed=1))
    fixed = open_split(tmp_path, "train", 4)
    drawn = open_split(tmp_path, "train", 4, augment=Augmenter([], seed=5, random_masks=True))
    assert not drawn.deterministic
    lines, seen = [], set()
    for epoch in range(8):
        drawn.set_epoch(epoch)
        for index in range(len(drawn)):
            item = drawn[index]
            assert item["mask"].shape == fixed[index]["mask"].shape == (1, 1, 40)  # whole columns, like the fixed
            column = item["mask"][0, 0]
            np.testing.assert_array_equal(item["target"], fixed[index]["target"])
            kspace = item["kspace"][0] + 1j * item["kspace"][1]
            np.testing.assert_allclose(kspace, fft2(item["target"][0]) * column, atol=1e-6)
            assert column[[-1, 0, 1]].all()  # the centre (DC and its neighbours) is always sampled
            seen.add(column.tobytes())
            lines.append(column.mean())
    assert len(seen) > 0.9 * 8 * len(drawn)  # a new mask per slice and epoch
    assert abs(1 / np.mean(lines) - 4) < 0.3  # 4x on average (random masks: the count varies per draw)

    again = open_split(tmp_path, "train", 4, augment=Augmenter(["flip"], seed=5, random_masks=True))
    again.set_epoch(3), drawn.set_epoch(3)
    for index in range(len(drawn)):  # the transforms' draws do not move the masks
        np.testing.assert_array_equal(again[index]["mask"], drawn[index]["mask"])
    in_workers = next(iter(DataLoader(drawn, batch_size=3, num_workers=2)))["mask"]
    np.testing.assert_array_equal(in_workers.numpy(), np.stack([drawn[i]["mask"] for i in range(3)]))


def test_random_masks_follow_the_axis_of_the_datasets_mask(tmp_path, write_kdmri, phantom):
    rows = cartesian_mask("random", 4, (16, 16), seed=3, axis=-2)  # KD-MRI's brain masks sample whole rows
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "mask_4x.npy", rows)
    write_kdmri(tmp_path / "train" / "a.h5", phantom(3, 16, 16, seed=1), {4: rows})  # stored k-space: re-simulated
    drawn = open_split(tmp_path, "train", 4, augment=Augmenter([], random_masks=True))
    masks = [drawn[index]["mask"] for index in range(3)]
    assert all(mask.shape == (1, 16, 1) for mask in masks) and len({mask.tobytes() for mask in masks}) == 3
    item = drawn[0]
    kspace = item["kspace"][0] + 1j * item["kspace"][1]
    np.testing.assert_allclose(kspace, fft2(item["target"][0]) * item["mask"][0], atol=1e-6)


def test_noisy_items_keep_a_clean_target(tmp_path, write_fastmri, phantom):
    write_fastmri(tmp_path / "train" / "a.h5", phantom(2, 32, 32, seed=1))
    plain = open_split(tmp_path, "train", 4)
    noisy = open_split(tmp_path, "train", 4, augment=Augmenter(["noise"], seed=0))
    item, reference = noisy[1], plain[1]
    np.testing.assert_array_equal(item["target"], reference["target"])
    np.testing.assert_array_equal(item["mask"], reference["mask"])
    noise = (item["kspace"] - reference["kspace"])
    assert np.all(noise[:, :, reference["mask"][0, 0] == 0] == 0)  # only sampled k-space is measured
    assert 0 < np.abs(noise).max()


def test_random_masks_at_an_acceleration_without_a_centre_fraction_are_refused(tmp_path, write_kdmri, phantom):
    mask = cartesian_mask("random", 6, (16, 16), seed=3, center_fraction=0.07)
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "mask_6x.npy", mask)
    write_kdmri(tmp_path / "train" / "a.h5", phantom(2, 16, 16, seed=1))
    assert acceleration_of(open_split(tmp_path, "train", 6).mask) > 4  # the data's own mask needs no fraction
    with pytest.raises(KdcError, match=r"unknown acceleration 6x.*--center-fraction"):
        open_split(tmp_path, "train", 6, augment=Augmenter([], random_masks=True))
    drawn = open_split(tmp_path, "train", 6, center_fraction=0.07, augment=Augmenter([], random_masks=True))
    assert drawn[0]["mask"].shape == (1, 1, 16)

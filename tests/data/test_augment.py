import numpy as np
import pytest
from torch.utils.data import DataLoader

from kdc.data import DataError
from kdc.data.augment import AUGMENTATIONS, Augmenter
from kdc.data.slices import open_split
from kdc.mri.fft import fft2
from kdc.mri.masks import cartesian_mask


def orientations(image: np.ndarray) -> list[np.ndarray]:
    """The 8 images a square image becomes under flips and quarter turns."""
    turns = [np.rot90(image, k) for k in range(4)]
    return turns + [np.flip(turn, 0) for turn in turns]


def test_draws_depend_on_seed_epoch_and_index_only():
    image = np.arange(16.0).reshape(4, 4)
    first, again = Augmenter(["flip", "rot90"], seed=1), Augmenter(["flip", "rot90"], seed=1)
    draws = [first(image, index) for index in range(40)]
    np.testing.assert_array_equal(np.stack(draws), np.stack([again(image, index) for index in range(40)]))
    assert {draw.tobytes() for draw in draws} == {view.tobytes() for view in orientations(image)}
    first.epoch = 1
    assert any(not np.array_equal(first(image, index), draw) for index, draw in enumerate(draws))
    assert Augmenter(["flip"], seed=2).names == ("flip",)


def test_unknown_names_and_shapes_a_transform_cannot_take_are_refused():
    with pytest.raises(DataError, match=r"--augment 'mirror': expected one of \['flip', 'rot90', 'scale'\]"):
        Augmenter(["flip", "mirror"])
    with pytest.raises(DataError, match="--augment rot90: needs square images, the data has 24x20"):
        Augmenter(["rot90"]).check_shape((24, 20))
    Augmenter(["flip"]).check_shape((24, 20))
    assert sorted(AUGMENTATIONS) == ["flip", "rot90", "scale"]


def test_scale_multiplies_the_image_by_a_factor_between_a_half_and_one():
    image = np.full((4, 4), 0.8, dtype=np.float32)
    factors = [Augmenter(["scale"], seed=0)(image, index)[0, 0] / 0.8 for index in range(200)]
    assert 0.5 <= min(factors) < 0.55 and 0.95 < max(factors) <= 1.0
    assert Augmenter(["scale"])(image, 0).dtype == np.float32


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

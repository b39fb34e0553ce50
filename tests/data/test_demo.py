import json

import numpy as np
import pytest

from kdc.data import DataError
from kdc.data.demo import demo_root, validation_images


def test_demo_set_is_small_documented_and_split_by_volume():
    root = demo_root()
    files = [path for path in root.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 3 * 2**20
    assert (root / "PROVENANCE.md").is_file()
    manifest = json.loads((root / "dataset.json").read_text())
    splits = {record["file"]: record["split"] for record in manifest["volumes"]}
    assert splits == {"train/mni2009a.h5": "train", "train/mni152.h5": "train", "val/colin27.h5": "val"}
    assert sorted(path.relative_to(root).as_posix() for path in root.glob("*/*.h5")) == sorted(splits)
    assert all(len(record["sha256"]) == 64 for record in manifest["volumes"])


@pytest.mark.parametrize("shape", [(150, 150), (640, 368), (256, 256), (33, 97)])
def test_validation_images_fit_any_shape(shape):
    images = validation_images(shape)
    assert images.shape == (4, *shape) and images.dtype == np.float32
    assert images.min() >= 0 and 0.5 < images.max() <= 1
    assert len({image.tobytes() for image in images}) == 4  # four different slices


def test_validation_images_pad_instead_of_stretching():
    tall = validation_images((640, 368), count=1)[0]
    square = validation_images((368, 368), count=1)[0]
    band = (640 - 368) // 2
    assert tall[:band - 8].max() < 0.02 and tall[-band + 8:].max() < 0.02  # zero padding above and below
    np.testing.assert_allclose(tall[band:-band].mean(), square.mean(), rtol=0.02)


def test_validation_images_count():
    assert validation_images((64, 64), count=40).shape == (40, 64, 64)
    with pytest.raises(DataError, match="41 slices asked for, the split has 40"):
        validation_images((64, 64), count=41)

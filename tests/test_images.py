"""Image decoding: EXIF orientation as viewers show it, high bit depths scaled, tiny images refused."""

import json

import numpy as np
import pytest
from PIL import Image

from datamodules.pairs import PairsDataset
from sdcorr.errors import DataError
from sdcorr.images import image_dimensions, load_image
from tests.conftest import DEMO


def rotated_jpeg(path, orientation=6):
    """The chelsea source (300x200) stored sideways, 200 wide and 300 high, with an EXIF orientation tag
    that tells viewers to turn it back; returns the upright photo as PIL decodes it without the tag."""
    upright = Image.open(DEMO / "0_chelsea_source.jpg").convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what orientation 6 turns back (270 degrees)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif)
    return upright


def test_exif_orientation_is_applied_as_viewers_do(tmp_path):
    upright = rotated_jpeg(tmp_path / "phone.jpg")
    assert Image.open(tmp_path / "phone.jpg").size == (200, 300)  # as stored
    assert image_dimensions(tmp_path / "phone.jpg") == (300, 200)  # as displayed
    image = load_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 200, 300)
    reference = np.asarray(upright, dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.abs(image.numpy() - reference).mean() < 0.03  # the same picture, up to JPEG re-encoding
    # keypoints refer to the displayed image: (250, 150) is inside 300x200, not outside 200x300
    pair = {"source": "phone.jpg", "target": "phone.jpg", "source_keypoints": [[250, 150], [10, 10]],
            "target_keypoints": [[250, 150], [10, 10]]}  # fmt: skip
    (tmp_path / "pairs.json").write_text(json.dumps({"pairs": [pair]}))
    assert PairsDataset(tmp_path / "pairs.json")[0]["source_image"].shape == (3, 200, 300)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    image = load_image(tmp_path / "gray16.png")
    assert image.shape == (3, 30, 40)
    assert np.allclose(image[0].numpy(), ramp / 65535, atol=1e-6)
    assert (image[0] == image[1]).all() and (image[1] == image[2]).all()
    assert 0.45 < float(image.mean()) < 0.55  # not the all-white image of convert("RGB")


def test_too_small_images_are_refused(tmp_path):
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    for read in (load_image, image_dimensions):
        with pytest.raises(DataError, match=r"dot.png: image is 1x1 pixels; expected at least 8"):
            read(tmp_path / "dot.png")


def test_a_folder_given_as_an_image_is_named_as_a_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    for read in (load_image, image_dimensions):
        with pytest.raises(DataError, match=r"photos: is a folder; expected an image file"):
            read(tmp_path / "photos")
    with pytest.raises(DataError, match=r"gone\.jpg: image file not found"):
        load_image(tmp_path / "gone.jpg")

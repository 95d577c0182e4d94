"""The app's image sources: folders of PNG/JPEG/TIFF (grey, RGB, 16 bit) with optional masks."""

import io

import numpy as np
import pytest
from PIL import Image

from yiplearn import errors
from yiplearn.app import images


def _folder(tmp_path):
  grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
  Image.fromarray(grey).save(tmp_path / 'a.png')
  rgb = np.zeros((8, 8, 3), np.uint8)
  rgb[..., 0] = 90
  rgb[..., 2] = 30
  Image.fromarray(rgb).save(tmp_path / 'b.jpg', quality=100)
  Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(tmp_path / 'c.tif')
  (tmp_path / 'notes.txt').write_text('not an image')
  (tmp_path / 'masks').mkdir()
  m = np.zeros((8, 8), np.uint8)
  m[2:4, 2:5] = 255
  Image.fromarray(m).save(tmp_path / 'masks' / 'a.png')  # 0/255 -> 0/1
  Image.fromarray((m > 0).astype(np.uint8) * 2).save(tmp_path / 'masks' / 'c.png')  # classes
  return grey, rgb, m


def test_folder_images_masks_and_channels(tmp_path):
  grey, rgb, m = _folder(tmp_path)
  s = images.from_folder(str(tmp_path), channels=1, num_classes=3)
  assert s.names == ['a.png', 'b.jpg', 'c.tif'] and len(s) == 3 and s.has_gt
  np.testing.assert_allclose(s.images[0][..., 0], grey / 255.0, atol=1e-6)
  assert s.images[1].shape == (8, 8, 1)  # RGB -> luminance (mean of the channels)
  np.testing.assert_allclose(s.images[1][..., 0], 40 / 255.0, atol=2 / 255)
  np.testing.assert_allclose(s.images[2][..., 0] * 255, np.round(np.arange(64) * 1000 / 257).reshape(8, 8), atol=1)  # fmt: skip
  np.testing.assert_array_equal(s.gts[0], (m > 0).astype(np.int32))
  assert s.gts[1] is None
  np.testing.assert_array_equal(s.gts[2], (m > 0).astype(np.int32) * 2)
  three = images.from_folder(str(tmp_path), channels=3, num_classes=3, image_size=16)
  assert three.images[0].shape == (16, 16, 3) and three.gts[0].shape == (16, 16)
  np.testing.assert_array_equal(three.images[0][..., 0], three.images[0][..., 2])  # grey repeated


def test_display_and_mask_png():
  image = np.linspace(-2, 3, 12, dtype=np.float32).reshape(3, 4, 1)
  shown = np.asarray(Image.open(io.BytesIO(images.display_png(image))))
  assert shown.shape == (3, 4) and shown.min() == 0 and shown.max() == 255
  mask = np.array([[0, 1], [2, 1]])
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(images.mask_png(mask)))), mask)


def test_folder_errors(tmp_path):
  with pytest.raises(
    errors.MissingDataError, match=r"^images.folder='.*nowhere': expected a directory"
  ):
    images.from_folder(str(tmp_path / 'nowhere'), channels=1, num_classes=2)
  with pytest.raises(errors.MissingDataError, match=r'expected at least one image \(.png, .jpg'):
    images.from_folder(str(tmp_path), channels=1, num_classes=2)
  (tmp_path / 'x.png').write_bytes(b'not a png')
  with pytest.raises(errors.UserError, match=r"^images.folder file='.*x.png': expected a readable"):
    images.from_folder(str(tmp_path), channels=1, num_classes=2)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / 'x.png')
  (tmp_path / 'masks').mkdir()
  Image.fromarray(np.full((8, 8), 5, np.uint8)).save(tmp_path / 'masks' / 'x.png')
  with pytest.raises(
    errors.UserError, match=r"^mask='.*x.png': expected class indices in \[0, 2\)"
  ):
    images.from_folder(str(tmp_path), channels=1, num_classes=2)
  Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / 'masks' / 'x.png')
  with pytest.raises(errors.UserError, match=r"^mask='.*x.png': expected the shape \(8, 8\)"):
    images.from_folder(str(tmp_path), channels=1, num_classes=2)

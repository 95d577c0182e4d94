"""Tests for ``yiplearn.data.manual``: name-based file search, errors, image reading."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from yiplearn.data import manual


def touch(path: pathlib.Path, text: str = 'x') -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return path


def test_list_and_find_files_recursive_sorted_case_insensitive(tmp_path):
  a = touch(tmp_path / 'b' / 'deep' / 'er' / 'TCGA_X_1_mask.tif')
  b = touch(tmp_path / 'a' / 'tcga_y_2_MASK.TIF')
  c = touch(tmp_path / 'a' / 'TCGA_y_2.tif')
  (tmp_path / 'empty_dir').mkdir()
  files = manual.list_files(tmp_path)
  assert files == sorted([a, b, c], key=str)
  assert all(p.is_file() for p in files)
  assert manual.find_files(tmp_path, 'TCGA_*_mask.tif') == [b, a]
  assert manual.find_files(tmp_path, 'TCGA_*_mask.tif', case_sensitive=True) == [a]
  assert manual.find_files(tmp_path / 'missing', '*') == []
  # Matching is on the name only, not on folder names.
  assert manual.match_files(files, 'deep*') == []


def test_list_files_follows_links_once(tmp_path):
  real = touch(tmp_path / 'data' / 'x.png')
  os.symlink(tmp_path / 'data', tmp_path / 'link_to_data')
  os.symlink(tmp_path, tmp_path / 'data' / 'loop')  # a cycle must not hang
  files = manual.list_files(tmp_path)
  # Reached three ways (directly, via the link, via the loop): listed once, at its real path.
  assert [p for p in files if p.name == 'x.png'] == [real]


def test_missing_error_is_one_line_and_informative(tmp_path):
  e = manual.missing_error(
    dataset='foo',
    download='FOO v1 (https://foo.org)',
    manual_dir=tmp_path,
    pattern='*.foo',
    detail='(line\nbreak)',
  )
  assert isinstance(e, FileNotFoundError)
  msg = str(e)
  for part in ('foo', 'FOO v1 (https://foo.org)', str(tmp_path), "'*.foo'", 'line break'):
    assert part in msg
  assert '\n' not in msg
  assert 'no manual_dir given' in str(
    manual.missing_error(dataset='foo', download='x', manual_dir=None, pattern='*')
  )


def test_require_files(tmp_path):
  f = touch(tmp_path / 'a.txt')
  assert manual.require_files([f], '*.txt', dataset='d', download='x', manual_dir=tmp_path) == [f]
  with pytest.raises(FileNotFoundError, match=r"'\*\.png'"):
    manual.require_files([f], '*.png', dataset='d', download='x', manual_dir=tmp_path)


class _FakeDlManager:
  def __init__(self, path, raises):
    self._manual_dir = path
    self._raises = raises

  @property
  def manual_dir(self):
    if self._raises:
      raise AssertionError('Manual directory does not exist or is empty')
    return self._manual_dir


def test_resolve_manual_dir(tmp_path):
  ok = _FakeDlManager(tmp_path, raises=False)
  assert manual.resolve_manual_dir(ok, dataset='d', download='D', pattern='*') == tmp_path
  with pytest.raises(FileNotFoundError, match='missing or empty') as e:
    manual.resolve_manual_dir(
      _FakeDlManager(tmp_path / 'nope', True), dataset='d', download='D release', pattern='*.x'
    )
  assert str(tmp_path / 'nope') in str(e.value) and 'D release' in str(e.value)
  f = touch(tmp_path / 'file')
  with pytest.raises(FileNotFoundError, match='not a directory'):
    manual.resolve_manual_dir(_FakeDlManager(f, False), dataset='d', download='D', pattern='*')


def test_read_image_modes_and_dtype(tmp_path):
  rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
  Image.fromarray(rgb).save(tmp_path / 'rgb.png')
  np.testing.assert_array_equal(manual.read_image(tmp_path / 'rgb.png'), rgb)
  gray = manual.read_image(tmp_path / 'rgb.png', mode='L')
  assert gray.shape == (4, 5) and gray.dtype == np.uint8
  # PIL's luma: L = R * 299/1000 + G * 587/1000 + B * 114/1000 (rounded).
  ref = np.round(rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114)
  assert np.abs(gray.astype(int) - ref).max() <= 1
  Image.fromarray(np.array([[True, False]])).save(tmp_path / 'bool.png')
  np.testing.assert_array_equal(manual.read_image(tmp_path / 'bool.png'), [[255, 0]])
  Image.fromarray(np.full((3, 3), 1000, np.uint16)).save(tmp_path / 'deep.png')
  with pytest.raises(ValueError, match='uint8'):
    manual.read_image(tmp_path / 'deep.png')
  gray3 = manual.read_image(tmp_path / 'rgb.png', mode='RGB')
  np.testing.assert_array_equal(gray3, rgb)


def test_code_path_property_points_to_module():
  from yiplearn.data import lgg

  assert str(lgg.LggKaggle3m.code_path).endswith('yiplearn/data/lgg.py')

"""Tests for the ``lgg_kaggle_3m`` builder: a tiny synthetic fixture and the real subset."""

from __future__ import annotations

import collections
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from yiplearn.data import lgg
from yiplearn.data.lgg import LggKaggle3m

REPO = pathlib.Path(__file__).resolve().parents[1]
LGG_DIR = pathlib.Path(
  os.environ.get('YIPLEARN_LGG_DIR', REPO.parent / 'shared' / 'data' / 'lgg_kaggle_3m')
)


def build(tmp: pathlib.Path, manual_dir, **kw) -> LggKaggle3m:
  b = LggKaggle3m(
    config=LggKaggle3m.make_config(**kw), data_dir=str(tmp), file_format='array_record'
  )
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else str(manual_dir)
    )
  )
  return b


def read_all(b: LggKaggle3m) -> dict[str, list[dict]]:
  out = {}
  for s in b.info.splits:
    src = b.as_data_source(s)
    out[s] = [src[i] for i in range(len(src))]
  return out


def text(v) -> str:
  return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------------------------
# Config validation and split assignment (no I/O).


def test_make_config_names_and_defaults():
  c = LggKaggle3m.make_config()
  assert c.name == 'all_slices' and c is LggKaggle3m.builder_configs['all_slices']
  assert LggKaggle3m.make_config(variant='largest_lesion').name == 'largest_lesion'
  c2 = LggKaggle3m.make_config(split_fractions=[0.5, 0.25, 0.25], stratify_by_site=False)
  assert c2.name == 'all_slices_split500-250-250_nostrat'
  assert str(c2.version) == '1.0.0'


@pytest.mark.parametrize(
  'kw, word',
  [
    (dict(variant='slices'), 'variant'),
    (dict(split_fractions=(0.5, 0.5, 0.5)), 'split_fractions'),
    (dict(split_fractions=(0.5, 0.5)), 'split_fractions'),
    (dict(split_fractions='abc'), 'split_fractions'),
    (dict(stratify_by_site='yes'), 'stratify_by_site'),
    (dict(image_size=64), 'image_size'),
  ],
)
def test_make_config_rejects_bad_values(kw, word):
  with pytest.raises(ValueError, match=word):
    LggKaggle3m.make_config(**kw)


def test_assign_splits_is_stable_stratified_and_complete():
  patients = [f'TCGA_{s}_{i:04d}_20000101' for s in ('AA', 'BB') for i in range(10)]
  sites = [p.split('_')[1] for p in patients]
  a = lgg.assign_splits(patients, sites)
  # Order of the input does not matter.
  b = lgg.assign_splits(patients[::-1], sites[::-1])
  assert a == b and set(a) == set(patients)
  for s in ('AA', 'BB'):
    cnt = collections.Counter(a[p] for p in patients if p.split('_')[1] == s)
    assert cnt == {'train': 6, 'validation': 2, 'test': 2}
  # Unstratified: global counts follow the fractions.
  c = lgg.assign_splits(patients, sites, (0.5, 0.3, 0.2), stratify=False)
  assert collections.Counter(c.values()) == {'train': 10, 'validation': 6, 'test': 4}


# ---------------------------------------------------------------------------------------------
# Tiny synthetic fixture in the release layout (fast).

# (patient folder, slices {index: lesion radius}, which channels copy FLAIR on which slices)
FIXTURE = [
  ('TCGA_AA_0001_19990101', {1: 0, 2: 10, 3: 20}, {}),
  ('TCGA_AA_0002_19990101', {5: 5, 7: 5}, {'post': 'all'}),  # tie -> lowest index 5
  ('TCGA_BB_0003_20000101', {2: 0, 10: 30, 11: 8}, {'pre': 'all'}),
  ('TCGA_BB_0004_20000101', {4: 12, 6: 0}, {'pre': 'some'}),  # only one slice -> False
  ('TCGA_CC_0005_20010101', {3: 15, 9: 25}, {}),
]


def _disk(radius: int, center=(100, 130)) -> np.ndarray:
  yy, xx = np.mgrid[:256, :256]
  return (
    ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2)
    if radius
    else np.zeros((256, 256), bool)
  )


def write_fixture(root: pathlib.Path) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
  """Writes the fixture (plus a duplicated copy of two patients); returns the truth."""
  truth = {}
  rng = np.random.default_rng(0)
  for patient, slices, copies in FIXTURE:
    folder = root / 'lgg-mri-segmentation' / 'kaggle_3m' / patient
    folder.mkdir(parents=True)
    for j, (idx, radius) in enumerate(sorted(slices.items())):
      img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
      if copies.get('pre') == 'all' or (copies.get('pre') == 'some' and j == 0):
        img[..., 0] = img[..., 1]
      if copies.get('post') == 'all':
        img[..., 2] = img[..., 1]
      m = _disk(radius)
      mask = np.where(m, 255, 0).astype(np.uint8)
      mask[0, 0] = 127  # just below the threshold -> 0
      Image.fromarray(img).save(folder / f'{patient}_{idx}.tif')
      Image.fromarray(mask).save(folder / f'{patient}_{idx}_mask.tif')
      truth[(patient, idx)] = (img, m.astype(np.uint8))
  # The Kaggle archive holds the tree twice; a duplicate copy must not duplicate records.
  dup = root / 'kaggle_3m'
  for patient, _, _ in FIXTURE[:2]:
    (dup / patient).mkdir(parents=True)
    for f in (root / 'lgg-mri-segmentation' / 'kaggle_3m' / patient).iterdir():
      (dup / patient / f.name).write_bytes(f.read_bytes())
  # An unrelated file and an unpaired image are ignored.
  (root / 'notes.txt').write_text('hello')
  Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(
    root / 'kaggle_3m' / FIXTURE[0][0] / f'{FIXTURE[0][0]}_99.tif'
  )
  return truth


@pytest.fixture(scope='module')
def fixture_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('lgg_fixture')
  truth = write_fixture(root)
  return root, truth


def test_fixture_all_slices(fixture_dir, tmp_path):
  root, truth = fixture_dir
  b = build(tmp_path, root, split_fractions=(0.5, 0.0, 0.5), stratify_by_site=False)
  recs = read_all(b)
  allrecs = [r for s in recs for r in recs[s]]
  assert len(allrecs) == len(truth) == 12
  # Patient-level split: every patient in exactly one split.
  where = collections.defaultdict(set)
  for s in recs:
    for r in recs[s]:
      where[text(r['patient'])].add(s)
  assert all(len(v) == 1 for v in where.values()) and len(where) == 5
  assert sorted(recs) == ['test', 'train']  # the empty validation split is left out
  flags = {
    p: (pre, post)
    for p, _, c in FIXTURE
    for pre, post in [(c.get('pre') == 'all', c.get('post') == 'all')]
  }
  for r in allrecs:
    patient, idx = text(r['patient']), int(r['slice_index'])
    img, mask = truth[(patient, idx)]
    np.testing.assert_array_equal(r['image'], img)
    np.testing.assert_array_equal(r['mask'], mask)
    assert r['image'].dtype == np.uint8 and r['mask'].dtype == np.uint8
    assert int(r['lesion_area']) == int(mask.sum())
    assert text(r['site']) == patient.split('_')[1]
    assert text(r['id']) == f'{patient}_{idx}'
    assert text(r['domain']) == f'lgg_{patient.split("_")[1]}'
    assert (bool(r['pre_is_flair_copy']), bool(r['post_is_flair_copy'])) == flags[patient]


def test_fixture_largest_lesion(fixture_dir, tmp_path):
  root, truth = fixture_dir
  b = build(tmp_path, root, variant='largest_lesion')
  recs = [r for rs in read_all(b).values() for r in rs]
  got = {text(r['patient']): int(r['slice_index']) for r in recs}
  assert got == {
    'TCGA_AA_0001_19990101': 3,
    'TCGA_AA_0002_19990101': 5,
    'TCGA_BB_0003_20000101': 10,
    'TCGA_BB_0004_20000101': 4,
    'TCGA_CC_0005_20010101': 9,
  }
  # Copy flags are computed over all of a patient's slices, not only the kept one.
  f = {text(r['patient']): bool(r['pre_is_flair_copy']) for r in recs}
  assert f['TCGA_BB_0003_20000101'] and not f['TCGA_BB_0004_20000101']


def test_missing_manual_dir_says_what_to_download(tmp_path):
  with pytest.raises(FileNotFoundError, match=r'LGG Segmentation Dataset.*kaggle'):
    build(tmp_path / 'data', tmp_path / 'does_not_exist')
  empty = tmp_path / 'wrong'
  empty.mkdir()
  (empty / 'readme.txt').write_text('x')
  with pytest.raises(FileNotFoundError) as e:
    build(tmp_path / 'data2', empty)
  assert 'TCGA_*_mask.tif' in str(e.value) and str(empty) in str(e.value)
  assert '\n' not in str(e.value)


# ---------------------------------------------------------------------------------------------
# Real data subset (440 slices, 110 patients).

SUBSET_SITES = {'DU': (45, 180), 'HT': (34, 136), 'CS': (16, 64), 'FG': (14, 56), 'EZ': (1, 4)}


@pytest.fixture(scope='module')
def real(tmp_path_factory):
  if not LGG_DIR.is_dir():
    pytest.skip(f'LGG data not found at {LGG_DIR} (set YIPLEARN_LGG_DIR)')
  data = tmp_path_factory.mktemp('lgg_real')
  b_all = build(data, LGG_DIR)
  b_big = build(data, LGG_DIR, variant='largest_lesion')
  return b_all, read_all(b_all), read_all(b_big)


def test_real_counts_shapes_and_sites(real):
  _, recs, _ = real
  allrecs = [r for s in recs for r in recs[s]]
  assert len(allrecs) == 440
  patients = {text(r['patient']) for r in allrecs}
  assert len(patients) == 110
  sites = collections.Counter(text(r['site']) for r in allrecs)
  psites = collections.Counter(p.split('_')[1] for p in patients)
  assert {s: (psites[s], sites[s]) for s in sites} == SUBSET_SITES
  for r in allrecs[:40]:
    assert r['image'].shape == (256, 256, 3) and r['image'].dtype == np.uint8
    assert r['mask'].shape == (256, 256) and r['mask'].dtype == np.uint8
    assert set(np.unique(r['mask'])) <= {0, 1}
    assert int(r['lesion_area']) == int(r['mask'].sum())
  assert len({text(r['id']) for r in allrecs}) == 440


def test_real_patient_splits_and_copy_flags(real):
  _, recs, _ = real
  split_of = collections.defaultdict(set)
  for s in recs:
    for r in recs[s]:
      split_of[text(r['patient'])].add(s)
  assert all(len(v) == 1 for v in split_of.values())
  npat = collections.Counter(next(iter(v)) for v in split_of.values())
  assert npat == {'train': 66, 'validation': 22, 'test': 22}
  pre = {text(r['patient']) for s in recs for r in recs[s] if r['pre_is_flair_copy']}
  post = {text(r['patient']) for s in recs for r in recs[s] if r['post_is_flair_copy']}
  assert (len(pre), len(post)) == (6, 10)
  # The flag agrees with the pixels of every slice.
  for s in recs:
    for r in recs[s]:
      img = r['image']
      if r['pre_is_flair_copy']:
        np.testing.assert_array_equal(img[..., 0], img[..., 1])
      if r['post_is_flair_copy']:
        np.testing.assert_array_equal(img[..., 2], img[..., 1])


def test_real_largest_lesion(real):
  _, recs, big = real
  best = collections.defaultdict(int)
  split_of = {}
  for s in recs:
    for r in recs[s]:
      best[text(r['patient'])] = max(best[text(r['patient'])], int(r['lesion_area']))
      split_of[text(r['patient'])] = s
  got = [r for s in big for r in big[s]]
  assert len(got) == 110 and len({text(r['patient']) for r in got}) == 110
  for s in big:
    for r in big[s]:
      assert int(r['lesion_area']) == best[text(r['patient'])] > 0
      assert split_of[text(r['patient'])] == s  # same patient split in both variants


def test_real_rebuild_is_deterministic(real, tmp_path):
  b_all, recs, _ = real
  again = build(tmp_path, LGG_DIR, variant='largest_lesion')
  a = {text(r['id']): r for r in read_all(again)['test']}
  b = {text(r['id']): r for r in real[2]['test']}
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k]['image'], b[k]['image'])
    np.testing.assert_array_equal(a[k]['mask'], b[k]['mask'])
  # Record order of a split is also deterministic.
  assert [text(r['id']) for r in read_all(again)['train']] == [
    text(r['id']) for r in real[2]['train']
  ]


def test_via_registry(fixture_dir, tmp_path):
  registry = pytest.importorskip('yiplearn.data.registry')
  root, truth = fixture_dir
  src = registry.load_source(
    'lgg_kaggle_3m', 'train', data_dir=str(tmp_path), manual_dir=str(root), variant='largest_lesion'
  )
  assert len(src) >= 1
  r = src[0]
  assert r['image'].shape == (256, 256, 3) and (text(r['patient']), int(r['slice_index'])) in truth

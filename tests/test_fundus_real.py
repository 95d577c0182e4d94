"""Tests for the ``rimone_dl`` and ``drishti_gs1`` builders on tiny fixture folders."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from yiplearn.data import fundus_real as fr
from yiplearn.data.drishti_gs1 import DrishtiGs1
from yiplearn.data.fundus_real import RimOneDl

H, W = 64, 80


def build(cls, tmp: pathlib.Path, manual_dir, **kw):
  b = cls(config=cls.make_config(**kw), data_dir=str(tmp), file_format='array_record')
  b.download_and_prepare(
    download_config=tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else str(manual_dir)
    )
  )
  return b


def read(b, split: str) -> dict[str, dict]:
  src = b.as_data_source(split)
  recs = [src[i] for i in range(len(src))]
  return {text(r['id']): r for r in recs}


def text(v) -> str:
  return v.decode() if isinstance(v, bytes) else str(v)


def ellipse(cy, cx, ry, rx) -> np.ndarray:
  yy, xx = np.mgrid[:H, :W]
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def save(path: pathlib.Path, arr: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(arr).save(path)


def fundus_image(seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(20, 255, (H, W, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Pure geometry.


def test_three_class_mask_cup_inside_disc():
  disc = np.zeros((6, 6), bool)
  disc[1:5, 1:5] = True
  cup = np.zeros((6, 6), bool)
  cup[0:3, 0:3] = True  # leaks outside the disc
  m = fr.three_class_mask(disc, cup)
  expected = disc.astype(np.uint8)
  expected[1:3, 1:3] = 2
  np.testing.assert_array_equal(m, expected)
  assert m.dtype == np.uint8


def test_disc_crop_box_and_padding_by_hand():
  disc = np.zeros((50, 60), bool)
  disc[10:20, 30:36] = True  # box 10 x 6 -> diameter 10, centre (15, 33)
  assert fr.disc_crop_box(disc, 2.0) == (5, 23, 20)
  assert fr.disc_crop_box(disc, 1.0) == (10, 28, 10)
  x = np.arange(12, dtype=np.uint8).reshape(3, 4)
  got = fr.crop_padded(x, -1, 2, 3)
  np.testing.assert_array_equal(got, [[0, 0, 0], [2, 3, 0], [6, 7, 0]])
  np.testing.assert_array_equal(fr.crop_padded(x, 10, 10, 2), np.zeros((2, 2)))
  with pytest.raises(ValueError, match='empty'):
    fr.disc_crop_box(np.zeros((4, 4), bool), 2.0)


def test_disc_centred_crop_identity_scale_and_cdr():
  img = fundus_image(0)
  disc = np.zeros((H, W), bool)
  disc[20:40, 30:50] = True
  cup = np.zeros((H, W), bool)
  cup[25:35, 35:45] = True
  out, mask, box = fr.disc_centred_crop(img, disc, cup, 40, 2.0)
  assert box == (10, 20, 40)
  np.testing.assert_array_equal(out, img[10:50, 20:60])
  np.testing.assert_array_equal(mask, fr.three_class_mask(disc, cup)[10:50, 20:60])
  assert fr.vertical_cup_to_disc(disc, cup) == pytest.approx(0.5)
  # Disc at the corner: the crop is padded with zeros, disc stays centred.
  disc2 = ellipse(5, 6, 5, 5)
  out2, mask2, box2 = fr.disc_centred_crop(img, disc2, disc2 & ellipse(5, 6, 2, 2), 32, 2.0)
  assert box2[0] < 0 and box2[1] < 0
  assert (out2[:4, :4] == 0).all()
  ys, xs = np.nonzero(mask2 > 0)
  assert abs(ys.mean() - 15.5) < 1.0 and abs(xs.mean() - 15.5) < 1.0


@pytest.mark.parametrize(
  'kw, word',
  [
    (dict(image_size=8), 'image_size'),
    (dict(image_size=64.5), 'image_size'),
    (dict(image_size=True), 'image_size'),
    (dict(crop_scale=0.5), 'crop_scale'),
    (dict(crop_scale='2'), 'crop_scale'),
    (dict(domain='x'), 'domain'),
  ],
)
def test_make_config_validation(kw, word):
  for cls in (RimOneDl, DrishtiGs1):
    with pytest.raises(ValueError, match=word):
      cls.make_config(**kw)


def test_make_config_names():
  assert RimOneDl.make_config().name == 'size256_crop200'
  assert RimOneDl.make_config() is RimOneDl.builder_configs['size256_crop200']
  assert DrishtiGs1.make_config(image_size=64, crop_scale=1.5).name == 'size64_crop150'


# ---------------------------------------------------------------------------------------------
# RIM-ONE DL fixture.

# stem -> (image folder(s) relative to RIM-ONE_DL_images, label folder, disc centre)
RIMONE = {
  'r2_Im001': (
    ['partitioned_by_hospital/training_set/glaucoma', 'partitioned_randomly/training_set/glaucoma'],
    'glaucoma',
    (30, 40),
  ),
  'r1_Im002': (['partitioned_by_hospital/training_set/normal'], 'normal', (28, 36)),
  'r3_G-1-L_left_half': (
    ['partitioned_by_hospital/test_set/glaucoma', 'partitioned_randomly/test_set/glaucoma'],
    'glaucoma',
    (34, 44),
  ),
  'r1_Im003': (['partitioned_randomly/test_set/normal'], 'normal', (32, 38)),
}


@pytest.fixture(scope='module')
def rimone_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('rimone')
  truth = {}
  for k, (stem, (folders, label, (cy, cx))) in enumerate(sorted(RIMONE.items())):
    img = fundus_image(k)
    for j, folder in enumerate(folders):
      # Duplicates in the random partition differ, to prove the hospital copy is preferred.
      save(root / 'RIM-ONE_DL_images' / folder / f'{stem}.png', img if j == 0 else img // 2)
    disc = ellipse(cy, cx, 10, 9)
    cup = ellipse(cy, cx, 5, 4)
    segs = root / 'extra' / 'nested' / 'RIM-ONE_DL_reference_segmentations' / label
    save(segs / f'{stem}-1-Disc-T.png', np.where(disc, 255, 0).astype(np.uint8))
    save(segs / f'{stem}-1-Cup-T.png', np.where(cup, 255, 0).astype(np.uint8))
    truth[stem] = (img, disc, cup)
  # A mask without its image is skipped; an unrelated png is ignored.
  save(root / 'extra' / 'r9_Im999-1-Disc-T.png', np.zeros((H, W), np.uint8))
  save(root / 'other.png', np.zeros((H, W, 3), np.uint8))
  return root, truth


@pytest.fixture(scope='module')
def rimone(rimone_dir, tmp_path_factory):
  root, truth = rimone_dir
  b = build(RimOneDl, tmp_path_factory.mktemp('rimone_data'), root, image_size=32)
  return b, truth


def test_rimone_splits_labels_and_partition(rimone):
  b, truth = rimone
  assert set(b.info.splits) == {'train', 'test', 'unpartitioned'}
  train, test, everything = read(b, 'train'), read(b, 'test'), read(b, 'all')
  assert set(train) == {'r2_Im001', 'r1_Im002'}
  assert set(test) == {'r3_G-1-L_left_half'}
  assert set(everything) == set(RIMONE)  # TFDS's reserved 'all' = union of the splits
  assert set(read(b, 'unpartitioned')) == {'r1_Im003'}
  for stem, r in everything.items():
    assert int(r['label']) == (1 if RIMONE[stem][1] == 'glaucoma' else 0)
    assert text(r['release']) == stem[:2]
  assert [text(train[s]['hospital']) for s in sorted(train)] == ['HUC', 'HUC']
  assert text(test['r3_G-1-L_left_half']['hospital']) == 'HUMS_HCSC'
  assert text(test['r3_G-1-L_left_half']['partition']) == 'test'
  assert text(train['r2_Im001']['domain']) == 'HUC'
  # Image only in the random partition: no hospital, domain falls back to the sub-release.
  r = everything['r1_Im003']
  assert text(r['partition']) == '' and text(r['hospital']) == '' and text(r['domain']) == 'r1'


def test_rimone_crops_centred_and_prefer_hospital_copy(rimone):
  b, truth = rimone
  for stem, r in read(b, 'all').items():
    img, disc, cup = truth[stem]
    assert r['image'].shape == (32, 32, 3) and r['image'].dtype == np.uint8
    assert r['mask'].shape == (32, 32) and set(np.unique(r['mask'])) == {0, 1, 2}
    ys, xs = np.nonzero(r['mask'] == 2)
    assert abs(ys.mean() - 15.5) <= 1.0 and abs(xs.mean() - 15.5) <= 1.0
    row0, col0, side = (int(v) for v in r['crop_box'])
    assert side == 2 * 21  # disc box height 21 (radius 10) -> 2 diameters
    assert tuple(r['original_size']) == (H, W)
    assert float(r['cup_to_disc']) == pytest.approx(11 / 21)
    # The stored image is the crop of the hospital copy (the random copy is img // 2).
    from PIL import Image as _I

    ref = np.asarray(
      _I.fromarray(fr.crop_padded(img, row0, col0, side)).resize((32, 32), _I.Resampling.BILINEAR)
    )
    np.testing.assert_array_equal(r['image'], ref)


def test_rimone_deterministic(rimone_dir, rimone, tmp_path):
  root, _ = rimone_dir
  b2 = build(RimOneDl, tmp_path, root, image_size=32)
  a, c = read(rimone[0], 'all'), read(b2, 'all')
  assert list(a) == list(c)
  for k in a:
    np.testing.assert_array_equal(a[k]['image'], c[k]['image'])


def test_rimone_missing_and_wrong_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match='RIM-ONE DL'):
    build(RimOneDl, tmp_path / 'd1', tmp_path / 'nope')
  wrong = tmp_path / 'wrong'
  save(wrong / 'images' / 'r1_Im001.png', fundus_image(0))  # images but no segmentations
  with pytest.raises(FileNotFoundError) as e:
    build(RimOneDl, tmp_path / 'd2', wrong)
  msg = str(e.value)
  assert 'Disc-T.png' in msg and str(wrong) in msg and 'rim-one-dl' in msg and '\n' not in msg


# ---------------------------------------------------------------------------------------------
# Drishti-GS1 fixture.


def soft_maps():
  """Disc/cup soft maps with levels 102 (2/5 experts: background) and 153/255 (majority)."""
  disc = np.zeros((H, W), np.uint8)
  disc[16:44, 26:54] = 102
  disc[20:40, 30:50] = 153
  disc[24:36, 34:46] = 255
  cup = np.zeros((H, W), np.uint8)
  cup[23:37, 33:47] = 102
  cup[25:35, 35:45] = 153
  return disc, cup


@pytest.fixture(scope='module')
def drishti_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('drishti')
  disc, cup = soft_maps()
  imgs = {}
  rel = root / 'Drishti-GS1_files' / 'Drishti-GS1_files'
  for n, folder in [
    ('002', rel / 'Training' / 'Images'),
    ('001', rel / 'Test' / 'Images'),
    ('003', rel / 'Test' / 'Images'),
    ('004', root / 'my copy' / 'train'),
  ]:  # variant layout, lower-case folder
    imgs[n] = fundus_image(int(n))
    save(folder / f'drishtiGS_{n}.png', imgs[n])
  gt_places = {
    '002': rel / 'Training' / 'GT',
    '001': root / 'Drishti-GS1_GT_test' / 'Test_GT',  # released separately
    '004': root / 'my copy' / 'gt',
  }
  for n, base in gt_places.items():
    sm = base / f'drishtiGS_{n}' / 'SoftMap'
    # Store the disc map as RGB to show colour soft maps work too.
    save(sm / f'drishtiGS_{n}_ODsegSoftmap.png', np.stack([disc] * 3, -1))
    save(sm / f'drishtiGS_{n}_cupsegSoftmap.png', cup)
  return root, imgs


def test_drishti_majority_threshold_and_splits(drishti_dir, tmp_path):
  root, imgs = drishti_dir
  b = build(DrishtiGs1, tmp_path, root, image_size=40, crop_scale=2.0)
  train, test = read(b, 'train'), read(b, 'test')
  assert set(train) == {'drishtiGS_002', 'drishtiGS_004'}
  assert set(test) == {'drishtiGS_001'}  # 003 has no GT: skipped
  disc, cup = soft_maps()
  # Independent reference: majority = at least 3 of 5 experts = levels 153 and 255.
  ref = np.zeros((H, W), np.uint8)
  ref[(disc == 153) | (disc == 255)] = 1
  ref[((disc == 153) | (disc == 255)) & (cup == 153)] = 2
  for stem, r in {**train, **test}.items():
    n = stem[-3:]
    assert tuple(int(v) for v in r['crop_box']) == (10, 20, 40)  # 1:1 scale: exact check
    np.testing.assert_array_equal(r['mask'], ref[10:50, 20:60])
    np.testing.assert_array_equal(r['image'], imgs[n][10:50, 20:60])
    assert int(r['label']) == -1 and text(r['domain']) == 'drishti_gs1'
    assert float(r['cup_to_disc']) == pytest.approx(0.5)
  assert text(test['drishtiGS_001']['partition']) == 'test'
  # Pixels at level 102 are background; at 153 foreground.
  assert ref[17, 27] == 0 and r['mask'][17 - 10, 27 - 20] == 0
  assert r['mask'][21 - 10, 31 - 20] == 1 and r['mask'][26 - 10, 36 - 20] == 2


def test_drishti_missing_and_wrong_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match='Drishti-GS1'):
    build(DrishtiGs1, tmp_path / 'd1', None)
  wrong = tmp_path / 'wrong'
  save(wrong / 'pictures' / 'drishtiGS_001.png', fundus_image(1))  # not under Training/Test
  with pytest.raises(FileNotFoundError) as e:
    build(DrishtiGs1, tmp_path / 'd2', wrong)
  assert 'drishtiGS_*.png' in str(e.value) and str(wrong) in str(e.value)
  no_gt = tmp_path / 'nogt'
  save(no_gt / 'Test' / 'drishtiGS_001.png', fundus_image(1))
  with pytest.raises(FileNotFoundError, match='Softmap'):
    build(DrishtiGs1, tmp_path / 'd3', no_gt)


def test_via_registry(drishti_dir, rimone_dir, tmp_path):
  registry = pytest.importorskip('yiplearn.data.registry')
  src = registry.load_source(
    'drishti_gs1', 'train', data_dir=str(tmp_path), manual_dir=str(drishti_dir[0]), image_size=32
  )
  assert len(src) == 2 and src[0]['mask'].shape == (32, 32)
  arr = registry.load_arrays(
    'rimone_dl',
    'test',
    data_dir=str(tmp_path),
    manual_dir=str(rimone_dir[0]),
    image_size=16,
    crop_scale=1.5,
  )
  assert arr['image'].shape == (1, 16, 16, 3) and list(arr['hospital']) == ['HUMS_HCSC']


def test_rimone_random_partition_and_auto(rimone_dir, tmp_path):
  root, _ = rimone_dir
  b = build(RimOneDl, tmp_path / 'rand', root, image_size=16, partition='random')
  assert b.builder_config.name == 'size16_crop200_random'
  train, test = read(b, 'train'), read(b, 'test')
  assert set(train) == {'r2_Im001'} and set(test) == {'r3_G-1-L_left_half', 'r1_Im003'}
  assert set(read(b, 'unpartitioned')) == {'r1_Im002'}  # only in the hospital partition
  assert text(train['r2_Im001']['hospital']) == 'HUC'  # from its hospital copy
  assert {text(r['release']) for r in test.values()} == {'r3', 'r1'}  # kept for leave-one-out
  # A release with only the random partition: 'auto' reads it as train / test (no empty splits).
  only_random = tmp_path / 'only_random'
  for p in root.rglob('*.png'):
    if 'partitioned_by_hospital' not in p.parts:
      dest = only_random / p.relative_to(root)
      dest.parent.mkdir(parents=True, exist_ok=True)
      dest.write_bytes(p.read_bytes())
  a = build(RimOneDl, tmp_path / 'auto', only_random, image_size=16)
  assert set(a.info.splits) == {'train', 'test'}
  assert set(read(a, 'train')) == {'r2_Im001'}
  with pytest.raises(ValueError, match='partition'):
    RimOneDl.make_config(partition='by_site')
  with pytest.raises(ValueError, match='unknown config key'):
    DrishtiGs1.make_config(partition='random')


def test_merge_seg_fundus_config_reads_the_release_and_splits_by_sub_release(tmp_path, monkeypatch):
  # The official layout: every sub-release has a train and a test image in partitioned_randomly.
  root = tmp_path / 'RIM-ONE_DL'
  for k, rel in enumerate(('r1', 'r2', 'r3')):
    for j, part in enumerate(('training_set', 'test_set')):
      stem = f'{rel}_Im00{j}'
      folder = root / 'RIM-ONE_DL_images' / 'partitioned_randomly' / part / 'normal'
      save(folder / f'{stem}.png', fundus_image(2 * k + j))
      segs = root / 'RIM-ONE_DL_reference_segmentations' / 'normal'
      save(segs / f'{stem}-1-Disc-T.png', np.where(ellipse(30, 40, 10, 9), 255, 0).astype(np.uint8))
      save(segs / f'{stem}-1-Cup-T.png', np.where(ellipse(30, 40, 5, 4), 255, 0).astype(np.uint8))
  from configs import merge_seg_fundus
  from yiplearn.experiments import seg_common

  monkeypatch.setenv('YIPLEARN_DATA_DIR', str(tmp_path / 'data'))
  c = merge_seg_fundus.get_config(f'dataset=rimone_dl,manual_dir={root},size=16')
  assert c.data.kwargs.partition == 'random' and 'partitioned_randomly' in c.data.partition_note
  data, k = seg_common.load_domains(c.data, str(tmp_path))
  assert k == 3 and list(data) == ['r1', 'r2', 'r3']
  for rel in data:
    (xtr, ytr), (xte, yte) = data[rel]['train'], data[rel]['test']
    assert xtr.shape == (1, 16, 16, 3) and xte.shape == (1, 16, 16, 3)
    assert set(np.unique(ytr)) <= {0, 1, 2} and ytr.max() == 2 and yte.max() == 2

"""Segmentation merging (merging/segmentation.py): the U-Net split, pixel-entropy scores against numpy,
identical experts, decoupled encoder/decoder coefficients, and every method through the contract."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yiplearn.merging import segmentation as sg
from yiplearn.merging import static
from yiplearn.merging import tree as tr
from yiplearn.models.unet import UNet

K = 3


@functools.cache
def _setup(k=K):
  model = sg.SegmentationModel(UNet(num_classes=2, widths=(2, 4), bottleneck=4, norm='group'))
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  base = model.init(jax.random.key(1), x)
  noise = lambda i, a: 0.3 * jax.random.normal(jax.random.fold_in(jax.random.key(2), i), a.shape)
  experts = [jax.tree.map(lambda a, i=i: a + noise(i, a), base) for i in range(k)]
  return model, x, base, experts


def test_encode_head_equal_the_unet_and_read_only_their_path():
  model, x, base, experts = _setup()
  x = jax.random.normal(jax.random.key(3), (2, 7, 9, 1))  # not a multiple of 4: padded, cropped
  np.testing.assert_allclose(model.apply(base, x), model.unet.apply(base, x), atol=1e-6)
  is_dec = sg.decoder_predicate(model.depth)
  dec, enc = tr.partition(base, is_dec)
  names = {tr.path_names(p)[1] for p, _ in jax.tree_util.tree_leaves_with_path(dec)}
  assert names == {'_Block_3', '_Block_4', 'ConvTranspose_0', 'ConvTranspose_1', 'Conv_0'}
  other = experts[0]  # decoder leaves of another model do not change the encoder's features
  mixed = tr.combine(tr.partition(other, is_dec)[0], enc)
  f0, f1 = model.encode(base, x), model.encode(mixed, x)
  for a, b in zip(jax.tree.leaves(f0), jax.tree.leaves(f1)):
    np.testing.assert_array_equal(a, b)
  mixed = tr.combine(
    dec, tr.partition(other, is_dec)[1]
  )  # and encoder leaves not the decoder's map
  np.testing.assert_array_equal(model.head(base, f0), model.head(mixed, f0))


def _np_entropy(logits):
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return -(p * np.log(p)).sum(-1), p


def test_pixel_entropy_scores_equal_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 4, 5, 3)).astype(np.float32) * 2  # J candidates, B, H, W, C
  logits[0, ..., 0] += 4  # candidate 0 mostly background
  stats = jax.vmap(sg.pixel_stats)(jnp.asarray(logits))
  ent, p = _np_entropy(logits.astype(np.float64))
  fg = logits.argmax(-1) > 0
  mask = fg.any(0)
  np.testing.assert_allclose(sg.scores_from_stats(stats, 'mean'), ent.mean((1, 2, 3)), rtol=1e-5)
  ref_fg = (ent * mask).sum((1, 2, 3)) / mask.sum()
  np.testing.assert_allclose(sg.scores_from_stats(stats, 'foreground'), ref_fg, rtol=1e-5)
  pb = p.reshape(3, -1, 3).mean(1)
  ref_m = ent.mean((1, 2, 3)) + 0.5 * (pb * np.log(pb)).sum(-1)
  np.testing.assert_allclose(sg.scores_from_stats(stats, 'mean', 0.5), ref_m, rtol=1e-5)
  # One model alone: its own foreground pixels; none predicted -> all pixels.
  one = logits[1]
  own = one.argmax(-1) > 0
  np.testing.assert_allclose(
    sg.pixel_entropy_score(jnp.asarray(one), 'foreground'), ent[1][own].mean(), rtol=1e-5
  )
  bg = np.zeros((1, 2, 2, 2), np.float32)
  bg[..., 0] = 3.0
  np.testing.assert_allclose(
    sg.pixel_entropy_score(jnp.asarray(bg), 'foreground'), _np_entropy(bg)[0].mean(), rtol=1e-5
  )
  # Dice: mean over the foreground classes of per-image Dice.
  lab = rng.integers(0, 3, size=(2, 4, 5))
  pred = logits[1].argmax(-1)
  ref = []
  for b in range(2):
    ref.append(
      np.mean(
        [
          2 * ((pred[b] == c) & (lab[b] == c)).sum() / ((pred[b] == c).sum() + (lab[b] == c).sum())
          for c in (1, 2)
        ]
      )
    )
  np.testing.assert_allclose(sg.dice(jnp.asarray(logits[1]), jnp.asarray(lab)), ref, rtol=1e-6)


@pytest.mark.parametrize(
  'kw', [{}, {'decouple': False}, {'scoring': 'foreground', 'marginal_weight': 0.5, 'ema': 0.5}]
)
def test_identical_experts_merge_to_the_expert(kw):
  model, x, base, experts = _setup()
  same = tr.stack([experts[0]] * K)
  m = sg.entropy_adaptive(model, K, grid_resolution=2, refine_radius=0.2, **kw)
  state = m.init(same, base)
  for _ in range(2):
    state, logits, info = jax.jit(m.update)(state, x)
  np.testing.assert_allclose(logits, model.apply(experts[0], x), atol=1e-5)
  np.testing.assert_allclose(np.sum(info['lam_enc']), 1.0, atol=1e-5)
  np.testing.assert_allclose(
    static.mean_merge(same)['params']['Conv_0']['kernel'],
    experts[0]['params']['Conv_0']['kernel'],
    atol=1e-6,
  )


class PixelToy:
  """Per-pixel linear encoder and head with the SegmentationModel interface (params 'encoder', 'head')."""

  def encode(self, v, x, train=False):
    return x @ v['params']['encoder']['w']

  def head(self, v, f, train=False):
    return f @ v['params']['head']['w'] + v['params']['head']['b']


def test_decoupled_coefficients_differ_from_coupled_and_score_better():
  # Expert 0's encoder maps the input block to feature block 1, which only expert 1's head reads:
  # the encoder prefers expert 0, the decoder expert 1; no single coefficient vector gets both.
  d, c = 3, 2
  rng = np.random.default_rng(0)
  protos = rng.normal(size=(d, c)).astype(np.float32)
  experts = []
  for k in range(2):
    we = np.zeros((2 * d, 2 * d), np.float32)
    we[k * d : (k + 1) * d, ((k + 1) % 2) * d : ((k + 1) % 2 + 1) * d] = np.eye(d)
    wh = np.zeros((2 * d, c), np.float32)
    wh[k * d : (k + 1) * d] = 6 * protos
    experts.append(
      {'params': {'encoder': {'w': we}, 'head': {'w': wh, 'b': np.zeros(c, np.float32)}}}
    )
  base = jax.tree.map(np.zeros_like, experts[0])
  y = rng.integers(0, c, size=(2, 6, 6))
  z = np.eye(c)[y] @ np.linalg.pinv(protos) + 0.05 * rng.normal(size=(2, 6, 6, d))
  x = np.zeros((2, 6, 6, 2 * d), np.float32)
  x[..., :d] = z  # the target's pixels live in input block 0
  x = jnp.asarray(x)
  stacked = tr.stack(experts)
  results = {}
  for name, decouple in (('decoupled', True), ('coupled', False)):
    m = sg.entropy_adaptive(
      PixelToy(),
      2,
      grid_resolution=4,
      temperature=0.0,
      decouple=decouple,
      decoder=tr.has_key('head'),
    )
    state = m.init(stacked, base)
    for _ in range(2):
      state, logits, info = m.update(state, x)
    results[name] = (info, logits)
  dec, cou = results['decoupled'][0], results['coupled'][0]
  np.testing.assert_allclose(dec['lam_enc'], [1, 0], atol=1e-6)
  np.testing.assert_allclose(dec['lam_head'], [0, 1], atol=1e-6)
  np.testing.assert_allclose(cou['lam_enc'], cou['lam_head'])
  assert not np.allclose(dec['lam_head'], cou['lam_head'])
  h = {n: float(sg.pixel_entropy_score(r[1])) for n, r in results.items()}
  assert h['decoupled'] < h['coupled'] - 0.1, h
  acc = {n: float(np.mean(np.argmax(r[1], -1) == y)) for n, r in results.items()}
  assert acc['decoupled'] > 0.95 and acc['decoupled'] >= acc['coupled'], acc


def test_every_segmentation_method_passes_the_contract():
  from configs import merge_seg_lgg
  from yiplearn.experiments import merge_seg, train_experts

  model, x, base, experts = _setup()
  fishers = [
    sg.diagonal_fisher(model, e, [np.asarray(x)], jax.random.key(i)) for i, e in enumerate(experts)
  ]
  assert all(np.all(np.asarray(f) >= 0) for f in jax.tree.leaves(fishers[0]))
  assert max(float(np.max(f)) for f in jax.tree.leaves(fishers[0])) > 0
  fam = train_experts.Family(model, ['a', 'b', 'c'], base, experts, fishers)
  c = merge_seg_lgg.get_config('quick')
  c.methods = merge_seg.KNOWN
  c.eam.grid_resolution = 2
  c.eam.chunk_size = 4
  data = {s: {'train': (np.asarray(x), np.zeros((2, 8, 8), np.int32))} for s in fam.sources}
  methods = merge_seg.build_methods(c, fam, data)
  assert len(methods) == len(merge_seg.KNOWN) + K - 1  # 'experts' is K rows
  stacked = tr.stack(experts)
  for name, m in methods.items():
    update = jax.jit(m.update, donate_argnums=0)
    state = m.init(stacked, base)
    for b in (x, x * 0.5):
      state, logits, info = update(state, b)
      assert logits.shape == (2, 8, 8, 2), name
      assert np.all(np.isfinite(np.asarray(logits))), name
      assert np.isfinite(float(info['entropy'])), name
    assert update._cache_size() == 1, name  # a second call never recompiles
  np.asarray(jax.tree.leaves(stacked)[0])  # init copies: the caller's experts survive donation


def test_evaluate_candidates_match_single_models():
  model, x, base, experts = _setup()
  stacked = tr.stack(experts)
  tau = tr.task_vectors(stacked, base)
  cands = jnp.asarray([[1.0, 0, 0], [0.2, 0.3, 0.5]])
  labels = (x[..., 0] > 0.5).astype(jnp.int32)
  out = sg.evaluate_candidates(
    model, base, tau, x, cands, labels, scoring='foreground', chunk_size=1
  )
  for j, lam in enumerate(np.asarray(cands)):
    v = tr.merge(base, tau, jnp.asarray(lam))
    logits = model.apply(v, x)
    np.testing.assert_allclose(out['dice'][j], np.mean(sg.dice(logits, labels)), rtol=1e-5)
  np.testing.assert_allclose(
    out['score'][0],
    sg.scores_from_stats(
      jax.tree.map(
        lambda *a: jnp.stack(a),
        *[sg.pixel_stats(model.apply(tr.merge(base, tau, l), x)) for l in cands],
      ),
      'foreground',
    )[0],
    rtol=1e-5,
  )


def test_invalid_options_raise_user_errors():
  from yiplearn import errors

  model = _setup()[0]
  with pytest.raises(errors.UserError, match='scoring'):
    sg.entropy_adaptive(model, K, scoring='median')
  with pytest.raises(errors.UserError, match='num_experts'):
    sg.entropy_adaptive(model, 1)

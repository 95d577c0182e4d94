"""A PyTorch eager reference of yiplearn's click-conditioned U-Net and its Mid-/Post-Interaction steps.

For benchmarks only (PyTorch is never a runtime dependency of yiplearn: `pip install -r
benchmarks/requirements.txt`). It mirrors, layer for layer and loss for loss:

* `yiplearn.models.unet.UNet` (norm='instance'): blocks of 2 x (3x3 conv without bias -> InstanceNorm without
  affine, eps 1e-6 -> ReLU), 2x2 max-pool, 2x2 stride-2 transposed conv with bias, skip concatenation, 1x1 conv;
* `yiplearn.losses.dice_focal` (alpha 0.7, gamma 2, background excluded from Dice) and `ccg_loss` ('paper':
  Gaussian weights in a 3-sigma window, -log p_t, divided by |C| H W);
* `yiplearn.interactive.updates.mi_step`: pseudo-label forward without gradient, forward + backward of
  DiceFocal + beta CCG on the previous input, one Adam step (skipped if the loss is not finite);
* `updates.pi_step`: stage 1 DiceFocal(f(I, {c_1}), P_final) + Adam step; stage-2 correction clicks from the
  error components between argmax P_1 and P_final (scipy.ndimage.label, 8-connectivity, largest first, a
  random pixel in each), stage 2 DiceFocal + beta CCG + Adam step.

`load_flax_params` copies a flax parameter tree into the torch model so that the benchmark can check that both
implementations compute the same loss and the same update before timing them.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    self.norm = nn.InstanceNorm2d(cout, affine=False, eps=1e-6)

  def forward(self, x):
    x = F.relu(self.norm(self.conv1(x)))
    return F.relu(self.norm(self.conv2(x)))


class UNet(nn.Module):
  """NCHW input (N, Cin, H, W) -> logits (N, K, H, W); H, W multiples of 2 ** len(widths)."""

  def __init__(
    self, in_channels: int, num_classes: int, widths=(12, 72, 144, 288), bottleneck: int = 576
  ):
    super().__init__()
    self.down = nn.ModuleList()
    c = in_channels
    for w in widths:
      self.down.append(Block(c, w))
      c = w
    self.mid = Block(c, bottleneck)
    c = bottleneck
    self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
    for w in reversed(widths):
      self.ups.append(nn.ConvTranspose2d(c, w, 2, stride=2))
      self.up_blocks.append(Block(2 * w, w))
      c = w
    self.head = nn.Conv2d(c, num_classes, 1)

  def forward(self, x):
    skips = []
    for block in self.down:
      x = block(x)
      skips.append(x)
      x = F.max_pool2d(x, 2)
    x = self.mid(x)
    for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
      x = block(torch.cat([up(x), skip], 1))
    return self.head(x)


def load_flax_params(model: UNet, params) -> None:
  """Copies a flax `UNet` parameter tree (`{'params': ...}`) into `model` (in place)."""
  p = params['params']
  conv = lambda k: torch.from_numpy(np.ascontiguousarray(np.asarray(k).transpose(3, 2, 0, 1)))
  # lax.conv_transpose (flax ConvTranspose, transpose_kernel=False) correlates the dilated input with the
  # kernel as is; torch's transposed conv scatters with it: the same map up to a spatial flip.
  tconv = lambda k: torch.from_numpy(
    np.ascontiguousarray(np.asarray(k)[::-1, ::-1].transpose(2, 3, 0, 1))
  )
  n = len(model.down)
  blocks = list(model.down) + [model.mid] + list(model.up_blocks)
  with torch.no_grad():
    for i, block in enumerate(blocks):
      bp = p[f'_Block_{i}']
      block.conv1.weight.copy_(conv(bp['Conv_0']['kernel']))
      block.conv2.weight.copy_(conv(bp['Conv_1']['kernel']))
    for i, up in enumerate(model.ups):
      up.weight.copy_(tconv(p[f'ConvTranspose_{i}']['kernel']))
      up.bias.copy_(torch.from_numpy(np.asarray(p[f'ConvTranspose_{i}']['bias'])))
    model.head.weight.copy_(conv(p['Conv_0']['kernel']))
    model.head.bias.copy_(torch.from_numpy(np.asarray(p['Conv_0']['bias'])))
  assert len(blocks) == 2 * n + 1


def dice_focal(
  logits, target, num_classes: int, alpha: float = 0.7, gamma: float = 2.0, eps: float = 1e-5
):
  """logits (N, K, H, W), target (N, H, W) int64 -> scalar; as `yiplearn.losses.dice_focal`."""
  logp = F.log_softmax(logits, 1)
  p = logp.exp()
  g = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(p.dtype)
  inter = (p * g).sum((2, 3))
  denom = p.sum((2, 3)) + g.sum((2, 3))
  dice = (1 - (2 * inter + eps) / (denom + eps))[:, 1:].mean()
  logpt = logp.gather(1, target[:, None])[:, 0]
  q = (-torch.expm1(logpt)).clamp_min(0)
  focal = -(q**gamma * logpt).mean()
  return (1 - alpha) * dice + alpha * focal


def ccg_weights(
  coords: np.ndarray, labels: np.ndarray, target, num_classes: int, sigma: float = 3.0
):
  """(H, W) summed click-centred Gaussian weights of the clicks whose label equals the target there."""
  h, w = target.shape[-2:]
  f32 = dict(dtype=torch.float32, device=target.device)
  rows = torch.arange(h, **f32)[None] - torch.as_tensor(coords[:, :1], **f32)
  cols = torch.arange(w, **f32)[None] - torch.as_tensor(coords[:, 1:2], **f32)
  win, inv = 3.0 * sigma, 1.0 / (2 * sigma * sigma)
  gr = torch.where(rows.abs() <= win, torch.exp(-rows * rows * inv), torch.zeros((), **f32))
  gc = torch.where(cols.abs() <= win, torch.exp(-cols * cols * inv), torch.zeros((), **f32))
  labels = torch.as_tensor(labels, dtype=torch.int64, device=target.device)
  onehot = F.one_hot(labels, num_classes).float()
  per_class = torch.einsum('ti,tj,tk->ijk', gr, gc, onehot)
  return per_class.gather(2, target.reshape(h, w, 1))[..., 0]


def ccg_loss(logits, target, coords: np.ndarray, labels: np.ndarray, sigma: float = 3.0):
  """logits (1, K, H, W), target (1, H, W); clicks as (T, 2) coords and (T,) labels (valid ones only)."""
  if len(coords) == 0:
    return logits.sum() * 0
  k, h, w = logits.shape[1:]
  weights = ccg_weights(coords, labels, target[0], k, sigma)
  logpt = F.log_softmax(logits, 1).gather(1, target[:, None])[0, 0]
  return (weights * -logpt).sum() / (len(coords) * h * w)


def guidance(
  coords: np.ndarray, labels: np.ndarray, shape, num_classes: int, sigma: float = 5.0
) -> np.ndarray:
  """(K, H, W) Gaussian click maps (max over the clicks of each class, truncated at 3 sigma)."""
  h, w = shape
  out = np.zeros((num_classes, h, w), np.float32)
  rr, cc = np.mgrid[:h, :w]
  for (r, c), lab in zip(coords, labels):
    g = np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma * sigma))
    g[(rr - r) ** 2 + (cc - c) ** 2 > (3 * sigma) ** 2] = 0
    out[lab] = np.maximum(out[lab], g)
  return out


def make_input(image: np.ndarray, coords, labels, num_classes: int) -> torch.Tensor:
  """image (H, W, C) -> (1, C + K, H, W)."""
  maps = guidance(
    np.asarray(coords).reshape(-1, 2), np.asarray(labels), image.shape[:2], num_classes
  )
  return torch.from_numpy(np.concatenate([image.transpose(2, 0, 1), maps])[None].astype(np.float32))


class Adapter:
  """The online state: model + Adam, with MI and PI steps as in yiplearn.interactive.updates.

  The model's device (``model.to('cuda')`` before) is where the PI inputs are built; MI inputs are passed in
  on it. Every step returns the loss as a Python float, so a call ends when its GPU work has.
  """

  def __init__(
    self,
    model: UNet,
    num_classes: int,
    lr: float,
    beta: float = 200.0,
    ccg_sigma: float = 3.0,
    pi_clicks: int = 10,
    seed: int = 0,
  ):
    self.model, self.k, self.beta, self.sigma, self.pi_clicks = (
      model,
      num_classes,
      beta,
      ccg_sigma,
      pi_clicks,
    )
    self.opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-8)
    self.rng = np.random.default_rng(seed)
    self.skipped = 0

  def _step(self, loss) -> float:
    self.opt.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
      loss.backward()
      self.opt.step()
    else:
      self.skipped += 1
    return float(loss.detach())

  def mi_step(self, x_prev, x_cur, newest_coord, newest_label) -> float:
    """x_prev = input for C_{t-1}, x_cur for C_t (1, Cin, H, W); the newest click c_t."""
    with torch.no_grad():
      pseudo = self.model(x_cur).argmax(1)
    logits = self.model(x_prev)
    loss = dice_focal(logits, pseudo, self.k) + self.beta * ccg_loss(
      logits, pseudo, np.asarray([newest_coord]), np.asarray([newest_label]), self.sigma
    )
    return self._step(loss)

  def predict(self, x) -> torch.Tensor:
    with torch.no_grad():
      return self.model(x).argmax(1)

  def correction_clicks(self, final: np.ndarray, pred: np.ndarray):
    """Up to pi_clicks clicks, one per error component (per true class, 8-connected), largest first."""
    regions = []
    for c in range(self.k):
      lab, n = ndi.label((final == c) & (pred != c), structure=np.ones((3, 3)))
      if n:
        sizes = np.bincount(lab.ravel())[1:]
        regions += [(s, lab == i + 1) for i, s in enumerate(sizes)]
    regions.sort(key=lambda r: -r[0])
    coords, labels = [], []
    for _, mask in regions[: self.pi_clicks]:
      pix = np.argwhere(mask)
      r, c = pix[self.rng.integers(len(pix))]
      coords.append((r, c))
      labels.append(int(final[r, c]))
    return np.asarray(coords, np.int64).reshape(-1, 2), np.asarray(labels, np.int64)

  def pi_step(
    self, image: np.ndarray, first_coord, first_label, final: np.ndarray
  ) -> tuple[float, float]:
    """Two Adam steps after the image: stage 1 on f(I, {c_1}), stage 2 on the artificial clicks."""
    dev = next(self.model.parameters()).device
    target = torch.from_numpy(final.astype(np.int64))[None].to(dev)
    x1 = make_input(image, [first_coord], [first_label], self.k).to(dev)
    logits1 = self.model(x1)
    loss1 = self._step(dice_focal(logits1, target, self.k))
    p1 = logits1.detach().argmax(1)[0].cpu().numpy()
    coords, labels = self.correction_clicks(final, p1)
    if not len(coords):
      return loss1, 0.0
    x2 = make_input(image, coords, labels, self.k).to(dev)
    logits2 = self.model(x2)
    loss2 = dice_focal(logits2, target, self.k) + self.beta * ccg_loss(
      logits2, target, coords, labels, self.sigma
    )
    return loss1, self._step(loss2)

"""Evaluation through the real trainer (EMA versus raw parameters, padding, four
devices) and the augmentation that makes augmult's views."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from image_classification.input import augmentation
from tests.training import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_EVAL_SCRIPT = r'''
import json, sys
sys.path.insert(0, {root!r})
import jax, numpy as np
from image_classification.data import base
from image_classification.training import loop
from tests.training import wiring_helpers as wh

steps, clip, lr, decay = {steps}, {clip}, {lr}, {decay}
# Every training image is white (standardised to 1 per pixel) with label 1: each step
# moves logit1 - logit0 by exactly lr * C * sqrt(2 |x|^2 + 2) (fixed batches of
# identical examples, all clipped, no noise), so the raw parameters and the EMA end at
# known margins; class 0 starts with bias {bias0}, between the two.
white = np.full((16, 2, 2, 1), 255, np.uint8)
data = wh.random_splits(16, images=white, labels=np.ones(16, np.int32))
test_y = np.array([1, 1, 1, 0, 0, 0, 0], np.int32)
data = base.DatasetSplits(name='digits', train=data.train,
                          test=base.ArraySource(white[:7], test_y), num_classes=2,
                          mean=(0.5,), std=(0.5,))
config = wh.make_config(batch_size=8, steps=steps, sigma=0.0, clip=clip, lr=lr,
                        sampling='fixed', bias0={bias0})
config.training.ema.decay = decay
config.training.eval_batch_size = 3   # 7 test examples on 4 devices: padded batches
summary = loop.train(config, {workdir!r}, dataset=data)
state = wh.final_state({workdir!r})
def accuracy(head):
  x = np.ones((1, 4))
  logits = x @ np.asarray(head['kernel']) + np.asarray(head['bias'])
  return float(np.mean(np.argmax(logits, -1)[0] == test_y))
print(json.dumps({{'summary': summary, 'metrics': wh.read_metrics({workdir!r}),
                   'ndev': len(jax.devices()),
                   'raw': accuracy(state['params']['head']),
                   'ema': accuracy(state['ema_params']['head'])}}))
'''


def _ema_position(steps, decay):
  """Where the EMA of theta_t = t (t = 1..steps) ends, with the documented warm-up
  decay_t = min(decay, (1 + t) / (10 + t))."""
  e = 0.0
  for t in range(steps):
    d = min(decay, (1 + t) / (10 + t))
    e = d * e + (1 - d) * (t + 1)
  return e


def test_evaluation_uses_ema_params_and_ignores_padding_on_four_devices(tmp_path):
  steps, clip, lr, decay = 10, 0.3, 1.0, 0.99
  per_step = lr * clip * np.sqrt(2 * 4 + 2)
  tau = _ema_position(steps, decay)
  assert steps - tau > 0.5  # margin (steps - tau) / 2 * per_step = 0.47 in logits
  bias0 = per_step * (steps + tau) / 2  # raw ends above it, the EMA below
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  script = _EVAL_SCRIPT.format(root=ROOT, steps=steps, clip=clip, lr=lr, decay=decay,
                               bias0=bias0, workdir=str(tmp_path / 'run'))
  proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                        text=True, timeout=400, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['ndev'] == 4
  # From the checkpoint: the raw parameters predict class 1 (3 of 7 right), the EMA
  # class 0 (4 of 7 right), so the two evaluations are told apart.
  assert result['raw'] == 3 / 7 and result['ema'] == 4 / 7
  summary = result['summary']
  assert summary['evaluated_with_ema'] is True
  # 7 examples in padded batches of 4 on 4 devices: padding is neither right nor
  # counted (4/8 or 4/7 + padding would differ).
  assert summary['test_accuracy'] == 4 / 7
  assert result['metrics'][-1]['test_accuracy'] == 4 / 7


def _candidates(image, pad=4):
  """Every view random crop + flip can make of ``image`` [H, W, C]: {bytes: (dy, dx,
  flipped)}."""
  h, w, _ = image.shape
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode='reflect')
  out = {}
  for dy in range(2 * pad + 1):
    for dx in range(2 * pad + 1):
      crop = padded[dy:dy + h, dx:dx + w]
      out.setdefault(crop.tobytes(), (dy, dx, False))
      out.setdefault(crop[:, ::-1].tobytes(), (dy, dx, True))
  return out


def test_augmult_views_are_random_crops_and_flips_of_the_example():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  k = 64
  views = np.asarray(augmentation.augmult_views(
      keys, images, augmult=k, random_crop=True, random_flip=True, mean=(0.5,),
      std=(0.5,)))
  assert views.shape == (2, k, 8, 8, 1)
  drawn = []
  for i in range(2):
    standard = np.asarray(augmentation.standardise(images[i], (0.5,), (0.5,)))
    candidates = _candidates(standard)
    for v in views[i]:
      assert v.tobytes() in candidates  # a crop/flip of its own example, nothing else
      drawn.append(candidates[v.tobytes()])
  flips = np.mean([f for _, _, f in drawn])
  assert 0.25 < flips < 0.75
  assert len({(dy, dx) for dy, dx, _ in drawn}) >= 30  # of 81 offsets
  assert len({v.tobytes() for v in views[0]}) > k // 2  # the K views differ
  # Without crop and flip the K views are the standardised image itself.
  plain = np.asarray(augmentation.augmult_views(
      keys, images, augmult=3, random_crop=False, random_flip=False, mean=(0.5,),
      std=(0.5,)))
  for i in range(2):
    for v in plain[i]:
      np.testing.assert_array_equal(
          v, np.asarray(augmentation.standardise(images[i], (0.5,), (0.5,))))


def test_fixed_views_are_averaged_per_example_before_clipping():
  """config.model.features_shift's fixed views, stacked on the channel axis: the step
  clips each example's gradient of its loss averaged over its K views (one clipped
  contribution per example, norm <= C), exactly as computed by hand."""
  k, n, clip = 3, 6, 0.05
  step, state, _ = helpers.make_step(0.0, feature_views=k, clipping_norm=clip,
                                     expected_batch_size=8.0)
  rng = np.random.default_rng(3)
  stacked = rng.integers(0, 256, (n, 6, 6, k), dtype=np.uint8)  # view v: channel v
  labels = rng.integers(0, 3, n).astype(np.int32)
  mask = np.array([True] * (n - 1) + [False])  # the last slot is padding
  applied, stats = helpers.privatised_gradient(step, state, stacked, labels, mask)

  params = jax.device_get(state.params)
  views = np.asarray(augmentation.stacked_views(stacked, views=k, mean=(0.5,),
                                                std=(0.5,)))
  assert views.shape == (n, k, 6, 6, 1)
  for v in range(k):  # view v is channel v, standardised like an image
    np.testing.assert_allclose(views[:, v, ..., 0], (stacked[..., v] / 255 - 0.5) / 0.5,
                               rtol=1e-5, atol=1e-6)

  def example_loss(p, example_views, label):
    logits = step.apply_fn({'params': p}, example_views, is_training=True)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.full((k,), label)))

  expected, norms = None, []
  for i in range(n - 1):
    g = jax.grad(example_loss)(params, views[i], labels[i])
    norm = float(optax.global_norm(g))
    norms.append(norm)
    g = jax.tree_util.tree_map(lambda x: x * min(1.0, clip / norm), g)
    expected = g if expected is None else jax.tree_util.tree_map(jnp.add, expected, g)
  expected = jax.tree_util.tree_map(lambda x: x / 8.0, expected)
  assert max(norms) > clip  # the clipping acts
  assert int(stats['num_clipped']) == sum(x > clip for x in norms)
  for got, want in zip(jax.tree_util.tree_leaves(applied),
                       jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-7)

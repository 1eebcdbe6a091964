"""Sensitivity of the real DP step, measured: with the noise off, adding or removing
one example changes the update by at most lr x C / B.

This is the property the accountant assumes (add/remove-one adjacency, sensitivity C
of the clipped sum, normalised by the expected batch size B), checked on the whole
DPStep rather than on the clipping function: augmult views from the real
augmentation (random crop and flip), every per-example gradient implementation
('vmap', 'fast', 'ghost'), and 1 or 4 devices with no micro-batching (where a missing
device-varying cast lets shard_map sum gradients across devices before clipping).
Adversarial examples: extreme pixels, a constant image whose K views are identical
(K views clipped one by one would move the sum by K x C), and a wrong label.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax

from image_classification.models import registry
from image_classification.privacy import privatizers
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMPLEMENTATIONS = ('vmap', 'fast', 'ghost')
CLIP, B, LR, AUGMULT = 0.05, 8.0, 0.5, 4


def _batch(capacity=16, size=8):
  """A full batch and, for four slots (one per device with 4 devices), an adversarial
  example to add there."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (capacity, size, size, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, capacity).astype(np.int32)
  constant = np.full((size, size, 1), 255, np.uint8)  # K identical views
  checker = (np.indices((size, size)).sum(0) % 2 * 255).astype(np.uint8)[..., None]
  halves = np.zeros((size, size, 1), np.uint8)
  halves[:, size // 2:] = 255
  wrong = images[15].copy()
  candidates = {0: (constant, 0), 5: (checker, 1), 10: (halves, 2),
                15: (wrong, (labels[15] + 1) % 3)}
  return images, labels, candidates


def sensitivities(num_devices: int) -> dict:
  """For each implementation: [||update(D + x_k) - update(D)|| for the candidates x_k]
  and the bound lr C / B.

  D + x_k holds x_k in slot k; D holds there what the trainer puts in a padding slot
  (the image of training index 0, mask False). Every other slot, and the per-slot
  augmentation keys, are the same in both: a valid coupling of the mechanism's
  internal randomness, because the keys are secret and i.i.d. across slots (the last
  test shows what known keys would allow), under which a correct step moves by at most
  lr C / B.
  """
  devices = jax.devices()[:num_devices]
  mesh = mesh_lib.make_mesh(devices)
  model = registry.build('cnn', 3, channels=(8,))
  images, labels, candidates = _batch()
  params = model.init(jax.random.PRNGKey(0), np.zeros((1,) + images.shape[1:],
                                                      np.float32))['params']
  optimizer = optax.sgd(LR)
  host_state = jax.device_get(dp_step.init_state(params, optimizer, False))
  sharding = mesh_lib.batch_sharding(mesh)
  out = {}
  for impl in IMPLEMENTATIONS:
    cfg = dp_step.StepConfig(
        clipping_norm=CLIP, expected_batch_size=B,
        micro_batch_size=0, augmult=AUGMULT, random_crop=True, random_flip=True,
        per_example_grads=impl)
    step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(1),
                          noise_key=jax.random.PRNGKey(2),
                          privatizer=privatizers.GaussianPrivatizer(0.0))

    def update(x, y, mask):
      state = jax.device_put(host_state, mesh_lib.replicated(mesh))
      new, stats = step.run(state, [jax.device_put((x, y, mask), sharding)])
      new = jax.device_get(new.params)
      flat = [np.ravel(a) - np.ravel(b) for a, b in zip(
          jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(host_state.params))]
      return np.concatenate(flat), jax.device_get(stats)

    moves, clipped = [], []
    for k, (image, label) in candidates.items():
      x, y, mask = images.copy(), labels.copy(), np.ones(len(labels), bool)
      x[k], y[k], mask[k] = images[0], labels[0], False   # D: slot k is padding
      without, _ = update(x, y, mask)
      x[k], y[k], mask[k] = image, label, True            # D + x_k
      with_k, stats = update(x, y, mask)
      moves.append(float(np.linalg.norm(with_k - without)))
      clipped.append(float(stats['num_clipped']))
    out[impl] = {'moves': moves, 'clipped': clipped}
  out['bound'] = LR * CLIP / B
  out['ndev'] = len(devices)
  return out


def _check(result):
  bound = result['bound']
  for impl in IMPLEMENTATIONS:
    moves = result[impl]['moves']
    assert max(moves) <= bound * (1 + 1e-4), (impl, moves, bound)
    # Not vacuous: every example is clipped, so each one moves the update by close to
    # the bound (an identically-zero update would pass the line above).
    assert all(c == 16 for c in result[impl]['clipped'])
    assert min(moves) > 0.5 * bound, (impl, moves, bound)


def test_adding_one_example_moves_the_update_by_at_most_lr_c_over_b():
  _check(sensitivities(1))


_SCRIPT = r'''
import json, sys
sys.path.insert(0, {root!r})
from tests.training import test_neighbouring_batches as t
print(json.dumps(t.sensitivities(4)))
'''


def test_same_bound_on_four_devices_without_micro_batching():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _SCRIPT.format(root=ROOT)], env=env,
                        capture_output=True, text=True, timeout=400, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['ndev'] == 4
  _check(result)


def test_keys_an_adversary_knows_would_break_the_bound_through_the_slot_shift():
  """Why the augmentation keys are secret (docs/privacy.md, invariant 18).

  The trainer lays a batch out in index order, so an example added with the lowest
  index takes slot 0 and shifts every other example one slot on. With per-slot keys the
  adversary knows (as PRNGKey(config.seed) was), each shifted example is flipped by
  another key in the two worlds, and the update moves by far more than lr C / B: here
  63 half-black images of alternating orientation, flips only. The tests above couple
  the two worlds with equal keys per example, which is valid only because the keys are
  secret and i.i.d. across slots (tests/workdir/test_secret_file.py checks that the
  trainer's are)."""
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  model = registry.build('cnn', 2, channels=(8,), flatten=True)
  clip, b, lr, capacity, n = 0.05, 64.0, 0.5, 64, 63
  half = np.zeros((8, 8, 1), np.uint8)
  half[:, 4:] = 255
  images = np.stack([half if i % 2 else half[:, ::-1] for i in range(n + 1)])
  labels = np.zeros(n + 1, np.int32)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32))['params']
  optimizer = optax.sgd(lr)
  host_state = jax.device_get(dp_step.init_state(params, optimizer, False))
  cfg = dp_step.StepConfig(clipping_norm=clip, expected_batch_size=b, micro_batch_size=0,
                           random_flip=True, per_example_grads='vmap')
  step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(3),
                        noise_key=jax.random.PRNGKey(2),
                        privatizer=privatizers.GaussianPrivatizer(0.0))

  def update(indices):  # the trainer's layout: sorted indices first, padding after
    x = np.repeat(images[:1], capacity, 0)
    y, mask = np.zeros(capacity, np.int32), np.zeros(capacity, bool)
    x[:len(indices)], y[:len(indices)], mask[:len(indices)] = (
        images[indices], labels[indices], True)
    state = jax.device_put(host_state, mesh_lib.replicated(mesh))
    new, _ = step.run(state, [jax.device_put((x, y, mask), mesh_lib.batch_sharding(mesh))])
    return np.concatenate([np.ravel(a) - np.ravel(c) for a, c in zip(
        jax.tree_util.tree_leaves(jax.device_get(new.params)),
        jax.tree_util.tree_leaves(host_state.params))])

  others = list(range(1, n + 1))
  move = np.linalg.norm(update([0] + others) - update(others))
  assert move > 3 * lr * clip / b, (move, lr * clip / b)

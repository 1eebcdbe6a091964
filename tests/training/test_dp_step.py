"""The DP step as a whole: micro-batching, noise once per logical batch, overflow chunks,
the expected-batch-size normaliser, and multi-device == single-device."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import base
from image_classification.privacy import noise
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib
from tests.training import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def test_micro_batches_equal_one_shot_including_noise():
  images, labels = helpers.tiny_batch(16)
  mask = np.ones(16, bool)
  mask[[3, 11]] = False
  results = []
  for micro in (0, 8, 4, 1):
    step, state, _ = helpers.make_step(noise_multiplier=2.0, micro_batch_size=micro)
    g, stats = helpers.privatised_gradient(step, state, images, labels, mask)
    results.append(_flat(g))
    assert stats['num_examples'] == 14
  for r in results[1:]:
    np.testing.assert_allclose(r, results[0], rtol=1e-5, atol=1e-6)


def test_noise_is_drawn_once_with_std_sigma_c_over_b():
  """privatised - noiseless gradient = sigma*C/B * N(0, I): one draw, whatever the
  micro-batching (several draws would multiply the std by sqrt(#micro-batches)).

  The expected std is computed here, not by the noise module. 60 steps' noise (fresh
  keys per step) gives about 24000 coordinates: the sample std has a relative
  standard error of 0.46%, so the 2.5% tolerance is 5.5 standard errors from the
  truth and a 10% error in the std (or a second draw) is 16 or more away.
  Deterministic: fixed seeds."""
  images, labels = helpers.tiny_batch(16)
  mask = np.ones(16, bool)
  sigma, clip, b = 3.0, 0.5, 8.0
  step0, state0, _ = helpers.make_step(0.0, micro_batch_size=2, clipping_norm=clip,
                                       expected_batch_size=b)
  clean, _ = helpers.privatised_gradient(step0, state0, images, labels, mask)
  step, state, mesh = helpers.make_step(sigma, micro_batch_size=2, clipping_norm=clip,
                                        expected_batch_size=b)
  host = jax.device_get(state)
  residuals = []
  for s in range(60):
    state_s = jax.device_put(host.replace(step=np.int32(s)), mesh_lib.replicated(mesh))
    noisy, _ = helpers.privatised_gradient(step, state_s, images, labels, mask)
    residuals.append(_flat(noisy) - _flat(clean))
  residual = np.concatenate(residuals)
  expected_std = sigma * clip / b
  n = residual.size
  assert n > 20000
  assert np.std(residual) == pytest.approx(expected_std, rel=0.025)
  assert abs(np.mean(residual)) < 5 * expected_std / np.sqrt(n)
  # A fresh draw every step: consecutive steps' noise is uncorrelated.
  corr = np.corrcoef(residuals[0], residuals[1])[0, 1]
  assert abs(corr) < 5 / np.sqrt(residuals[0].size)


def test_noise_keys_never_repeat_across_steps():
  base = jax.random.PRNGKey(0)  # the seeded switch's key (the 128-bit key's own test
  # is tests/privacy/test_noise_key.py)
  keys = {tuple(np.asarray(jax.random.key_data(noise.step_noise_key(base, s))).tolist())
          for s in range(2000)}
  assert len(keys) == 2000


def test_normaliser_is_expected_not_realised_batch_size():
  images, labels = helpers.tiny_batch(16)
  full = np.ones(16, bool)
  half = np.zeros(16, bool)
  half[:4] = True
  clip = 0.05
  step, state, _ = helpers.make_step(0.0, expected_batch_size=8.0, clipping_norm=clip)
  g8, _ = helpers.privatised_gradient(step, state, images, labels, full)
  step2, state2, _ = helpers.make_step(0.0, expected_batch_size=16.0, clipping_norm=clip)
  g16, _ = helpers.privatised_gradient(step2, state2, images, labels, full)
  np.testing.assert_allclose(_flat(g8), 2 * _flat(g16), rtol=1e-3, atol=1e-6)
  # A realised batch of 4 is still divided by the expected 8, not by 4: its norm is at
  # most 4 * C / 8.
  step3, state3, _ = helpers.make_step(0.0, expected_batch_size=8.0, clipping_norm=clip)
  g_half, s_half = helpers.privatised_gradient(step3, state3, images, labels, half)
  assert s_half['num_examples'] == 4
  assert np.linalg.norm(_flat(g_half)) <= 4 * clip / 8.0 * (1 + 1e-3)
  assert s_half['num_clipped'] == 4  # so the bound above is tight-ish, not vacuous
  assert np.linalg.norm(_flat(g_half)) > 0.5 * clip / 8.0


def test_empty_batch_only_noise():
  images, labels = helpers.tiny_batch(8)
  step, state, _ = helpers.make_step(1.0)
  g, stats = helpers.privatised_gradient(step, state, images, labels, np.zeros(8, bool))
  assert stats['num_examples'] == 0
  assert np.all(np.isfinite(_flat(g))) and np.linalg.norm(_flat(g)) > 0


def test_overflow_chunks_equal_one_chunk():
  """A batch split into two chunks (Poisson overflow) gives the same update."""
  images, labels = helpers.tiny_batch(16)
  mask = np.ones(16, bool)
  step, state, mesh = helpers.make_step(1.5)
  sharding = mesh_lib.batch_sharding(mesh)
  one, _ = step.run(state, [jax.device_put((images, labels, mask), sharding)])
  one = jax.device_get(one.params)
  # Same examples in two chunks of 8: the per-example keys differ by chunk, which does
  # not matter here (no augmentation), so the clipped sums agree.
  step2, state2, _ = helpers.make_step(1.5)
  chunks = [jax.device_put((images[:8], labels[:8], mask[:8]), sharding),
            jax.device_put((images[8:], labels[8:], mask[8:]), sharding)]
  two, _ = step2.run(state2, chunks)
  np.testing.assert_allclose(_flat(jax.device_get(two.params)), _flat(one),
                             rtol=1e-5, atol=1e-6)


_MULTI_DEVICE_SCRIPT = r'''
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from tests.training import helpers
images, labels = helpers.tiny_batch(16)
mask = np.ones(16, bool); mask[5] = False
out = {{}}
for n in (1, 4):  # a secret's 128-bit noise key, the same on every device
  step, state, _ = helpers.make_step(2.0, micro_batch_size=2, augmult=2, random_flip=True,
                                     devices=jax.devices()[:n],
                                     noise_key=np.arange(11, 15, dtype=np.uint32))
  g, stats = helpers.privatised_gradient(step, state, images, labels, mask)
  out[n] = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]).tolist()
print(json.dumps({{'ndev': len(jax.devices()), 'one': out[1], 'four': out[4]}}))
'''


def test_four_devices_equal_one_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _MULTI_DEVICE_SCRIPT.format(root=ROOT)],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['ndev'] == 4
  np.testing.assert_allclose(result['four'], result['one'], rtol=1e-4, atol=1e-6)


def test_ema_is_warmed_up_and_forgets_the_initialisation():
  """EMA of the real step's iterates with decay_t = min(decay, (1+t)/(10+t)): after a
  few steps the random initialisation no longer weighs on it (with a constant 0.9999
  it would still weigh 0.9999^T ~ 1)."""
  base, state, mesh = helpers.make_step(noise_multiplier=1.0)
  step = dp_step.DPStep(base.apply_fn, base.optimizer,
                        dataclasses.replace(base.cfg, ema_decay=0.9999, ema_start_step=2),
                        mesh, base.augment_key, base.noise_key, base.privatizer)
  images, labels = helpers.tiny_batch(8)
  batch = jax.device_put((images, labels, np.ones(8, bool)), mesh_lib.batch_sharding(mesh))
  expected = _flat(jax.device_get(state.params))
  init = expected.copy()
  for t in range(12):
    state, _ = step.run(state, [batch])
    params = _flat(jax.device_get(state.params))
    decay = 0.0 if t < 2 else min(0.9999, (1 + t - 2) / (10 + t - 2))
    assert float(dp_step.ema_decay_at(np.int32(t), 0.9999, 2)) == pytest.approx(decay)
    expected = decay * expected + (1 - decay) * params
  np.testing.assert_allclose(_flat(jax.device_get(state.ema_params)), expected,
                             rtol=1e-5, atol=1e-6)
  weight_of_init = np.prod([(1 + t) / (10 + t) for t in range(10)])
  assert weight_of_init < 1e-4  # vs 0.9999**10 ~ 0.999 without the warm-up
  assert not np.allclose(expected, init)
  # Far into a run the decay reaches the configured value.
  assert float(dp_step.ema_decay_at(np.int32(10**6), 0.9999)) == pytest.approx(0.9999)


def test_step_config_reads_the_config_and_the_plan_numbers():
  """dp_step.step_config: the one mapping from config fields to the step's
  parameters; the per-example gradient default is base.py's, overrides win."""
  config = base.get_config()
  config.data.augmult = 4
  config.training.ema.decay = 0.5
  cfg = dp_step.step_config(config, clipping_norm=0.7,
                            expected_batch_size=64.0, mean=[0.1], std=[0.2])
  assert cfg == dp_step.StepConfig(
      clipping_norm=0.7, expected_batch_size=64.0,
      micro_batch_size=config.training.micro_batch_size, per_example_grads='fast',
      augmult=4, random_crop=config.data.random_crop,
      random_flip=config.data.random_flip, mean=(0.1,), std=(0.2,), ema_decay=0.5,
      ema_start_step=config.training.ema.start_step)
  other = dp_step.step_config(config, clipping_norm=0.7,
                              expected_batch_size=64.0, mean=[0.1], std=[0.2],
                              augmult=1, per_example_grads='ghost')
  assert (other.augmult, other.per_example_grads) == (1, 'ghost')

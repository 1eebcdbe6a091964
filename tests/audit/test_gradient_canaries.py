"""Gradient canaries in the real DP step (training/canary_slots.py) and in the training
split (audit/gradient_canaries.py): what an included canary adds to the clipped sum,
that excluded or padded ones add nothing, that micro-batching and devices do not
change it, and that the run's own batch selection samples them."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from image_classification.audit import gradient_canaries
from image_classification.models import registry
from image_classification.training import canary_slots
from image_classification.privacy import privatizers
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib
from tests.audit.canary_helpers import indexed_splits
from tests.training import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAD = ('head', 'kernel')  # [32, 3] in the helpers' CNN: 96 coordinates


def _step(canaries, noise_multiplier=0.0, micro_batch_size=0, devices=None,
          clipping_norm=0.5, expected_batch_size=8.0):
  """helpers.make_step with gradient canaries (the same model, SGD at rate 1)."""
  model = registry.build('cnn', 3, channels=(32,))
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 6, 6, 1), np.float32))['params']
  optimizer = optax.sgd(1.0)
  cfg = dp_step.StepConfig(
      clipping_norm=clipping_norm, expected_batch_size=expected_batch_size, micro_batch_size=micro_batch_size,
      per_example_grads='vmap')
  mesh = mesh_lib.make_mesh(devices)
  step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(1),
                        noise_key=jax.random.PRNGKey(2), canaries=canaries,
                        privatizer=privatizers.GaussianPrivatizer(
                            noise_multiplier * clipping_norm))
  state = jax.device_put(dp_step.init_state(params, optimizer, False),
                         mesh_lib.replicated(mesh))
  return step, state


def _spec(coordinates=(5, 17, 40, 63), raw_norm=2.0):
  return canary_slots.GradientCanaries(HEAD, np.asarray(coordinates), raw_norm)


def _batch():
  """16 slots: real images; slots 2, 9 hold canaries 1 and 3; slot 12 holds canary 0
  but is padding (mask False); slot 5 is a padded real slot."""
  images, labels = helpers.tiny_batch(16)
  labels = labels.copy()
  labels[[2, 9, 12]] = canary_slots.canary_label(np.array([1, 3, 0]))
  mask = np.ones(16, bool)
  mask[[5, 12]] = False
  return images, labels, mask


def _flat_head(tree):
  return np.asarray(tree['head']['kernel']).reshape(-1)


def test_an_included_canary_adds_exactly_its_vector_clipped_to_c():
  images, labels, mask = _batch()
  clip, b = 0.5, 8.0
  spec = _spec(raw_norm=4 * clip)
  step, state = _step(spec, clipping_norm=clip, expected_batch_size=b)
  with_canaries, stats = helpers.privatised_gradient(step, state, images, labels, mask)
  # The same step without canaries, and the canary slots masked out: the real sum.
  plain, plain_state = _step(None, clipping_norm=clip, expected_batch_size=b)
  real_mask = mask & (labels >= 0)
  real, real_stats = helpers.privatised_gradient(plain, plain_state, images,
                                                 np.maximum(labels, 0), real_mask)
  delta = _flat_head(with_canaries) - _flat_head(real)
  expected = np.zeros_like(delta)
  expected[[17, 63]] = clip / b  # canaries 1 and 3: raw norm 4C, clipped to C
  np.testing.assert_allclose(delta, expected, rtol=1e-6, atol=1e-7)
  for leaf in ('conv0',):  # nothing reaches the other parameters
    np.testing.assert_array_equal(
        np.asarray(with_canaries[leaf]['kernel']), np.asarray(real[leaf]['kernel']))
  # The stats count the real examples only; the observation is the gradient applied.
  assert stats['num_examples'] == real_stats['num_examples'] == 12
  assert stats['loss_sum'] == pytest.approx(real_stats['loss_sum'], rel=1e-6)
  np.testing.assert_allclose(stats[canary_slots.OBSERVATION],
                             _flat_head(with_canaries)[spec.coordinates], rtol=1e-5, atol=1e-7)


def test_a_canary_below_c_is_not_scaled_and_excluded_ones_add_nothing():
  images, labels, mask = _batch()
  clip, b = 0.5, 8.0
  step, state = _step(_spec(raw_norm=0.3), clipping_norm=clip, expected_batch_size=b)
  with_canaries, _ = helpers.privatised_gradient(step, state, images, labels, mask)
  only_real = np.where(labels < 0, 0, labels)
  step2, state2 = _step(_spec(raw_norm=0.3), clipping_norm=clip, expected_batch_size=b)
  without, _ = helpers.privatised_gradient(step2, state2, images, only_real,
                                           mask & (labels >= 0))
  delta = _flat_head(with_canaries) - _flat_head(without)
  expected = np.zeros_like(delta)
  expected[[17, 63]] = 0.3 / b  # min(1, C / 0.3) = 1: the vector itself
  # Canary 0's slot is padding, canary 2 is not in the batch: zero at 5 and 40.
  np.testing.assert_allclose(delta, expected, rtol=1e-6, atol=1e-7)


def test_micro_batches_equal_one_batch_with_canaries():
  images, labels, mask = _batch()
  results = []
  for micro in (0, 4, 1):
    step, state = _step(_spec(), noise_multiplier=1.5, micro_batch_size=micro)
    g, _ = helpers.privatised_gradient(step, state, images, labels, mask)
    results.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]))
  for r in results[1:]:
    np.testing.assert_allclose(r, results[0], rtol=1e-5, atol=1e-6)


_MULTI_DEVICE_SCRIPT = r'''
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from tests.audit import test_gradient_canaries as t
from tests.training import helpers
images, labels, mask = t._batch()
out = {{}}
for n in (1, 4):
  step, state = t._step(t._spec(), noise_multiplier=1.5, micro_batch_size=2,
                        devices=jax.devices()[:n])
  g, stats = helpers.privatised_gradient(step, state, images, labels, mask)
  out[n] = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(g)]).tolist()
  out[f'obs{{n}}'] = np.asarray(stats['canary_observation']).tolist()
print(json.dumps({{'ndev': len(jax.devices()), **{{str(k): v for k, v in out.items()}}}}))
'''


def test_four_devices_equal_one_device_with_canaries():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _MULTI_DEVICE_SCRIPT.format(root=ROOT)],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['ndev'] == 4
  np.testing.assert_allclose(result['4'], result['1'], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(result['obs4'], result['obs1'], rtol=1e-4, atol=1e-6)


def test_the_split_appends_the_included_canaries_only():
  data = indexed_splits(n=50)
  included = np.array([True, False, True, True, False])
  out = gradient_canaries.with_canaries(data, included).train
  assert out.num_examples == 50 + 3
  images, labels = out.get(np.array([0, 49, 50, 51, 52]))
  np.testing.assert_array_equal(labels[:2], data.train.get(np.array([0, 49]))[1])
  # Canaries 0, 2, 3 (the included ones), as labels -1, -3, -4, zero images.
  np.testing.assert_array_equal(labels[2:], [-1, -3, -4])
  assert images.dtype == data.train.get(np.array([0]))[0].dtype
  assert not images[2:].any()
  only_canaries, _ = out.get(np.array([52, 50]))
  assert only_canaries.shape == (2, 4, 4, 1) and only_canaries.dtype == images.dtype
  with pytest.raises(IndexError):
    out.get(np.array([53]))


def test_draws_are_public_distinct_and_from_the_membership_stream():
  from image_classification.audit import statistics  # pylint: disable=g-import-not-at-top
  coords, included = gradient_canaries.draw(300, 1000, seed=7)
  assert len(np.unique(coords)) == 300 and coords.min() >= 0 and coords.max() < 1000
  np.testing.assert_array_equal(included, statistics.make_canary_membership(300, 7))
  again, _ = gradient_canaries.draw(300, 1000, seed=7)
  np.testing.assert_array_equal(coords, again)
  other, other_in = gradient_canaries.draw(300, 1000, seed=8)
  assert np.mean(coords != other) > 0.9 and np.mean(included != other_in) > 0.3
  with pytest.raises(ValueError, match='num_canaries'):
    gradient_canaries.draw(1001, 1000, seed=7)

"""Sensitivity of the clipped sum (per_example.py, shared by every implementation):
the property the whole guarantee rests on."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification.privacy.clipped_sums import per_example
from image_classification.privacy.clipped_sums import vmap


def _per_example_tree(key, batch):
  k1, k2 = jax.random.split(key)
  # Wildly different scales so that some examples are clipped and some are not.
  scales = jnp.exp(jax.random.uniform(k1, (batch,), minval=-4, maxval=4))
  return {'w': jax.random.normal(k2, (batch, 5, 3)) * scales[:, None, None],
          'b': {'bias': jax.random.normal(k1, (batch, 7)) * scales[:, None]}}


def _example(tree, i):
  return jax.tree_util.tree_map(lambda x: x[i], tree)


def _norm(tree):
  return float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(tree))))


@pytest.mark.parametrize('clip', [0.1, 1.0, 10.0])
def test_each_contribution_is_at_most_c(clip):
  batch = 64
  tree = _per_example_tree(jax.random.PRNGKey(0), batch)
  mask = jnp.ones(batch, bool)
  norms = per_example.global_norms(tree)
  factors, _ = per_example.clip_factors(norms, mask, clip)
  contributions = factors * norms
  assert float(contributions.max()) <= clip * (1 + 1e-5)
  # Examples already inside the ball are left untouched.
  small = norms < clip
  np.testing.assert_allclose(factors[small], 1.0)
  # Each example's contribution to the sum, measured through the sum itself.
  for i in range(0, batch, 7):
    one = jnp.zeros(batch, bool).at[i].set(True)
    s, _, _ = per_example.clipped_tree_sum(tree, one, clip)
    assert _norm(s) <= clip * (1 + 1e-5)


def test_replacing_one_example_moves_sum_by_at_most_2c():
  clip, batch = 1.0, 32
  tree = _per_example_tree(jax.random.PRNGKey(1), batch)
  mask = jnp.ones(batch, bool)
  base, _, _ = per_example.clipped_tree_sum(tree, mask, clip)
  for seed in range(20):
    other = _per_example_tree(jax.random.PRNGKey(100 + seed), batch)
    i = seed % batch
    replaced = jax.tree_util.tree_map(lambda x, y: x.at[i].set(y[i]), tree, other)
    s, _, _ = per_example.clipped_tree_sum(replaced, mask, clip)
    diff = jax.tree_util.tree_map(jnp.subtract, s, base)
    assert _norm(diff) <= 2 * clip * (1 + 1e-5)
  # Removing one (mask it out) moves the sum by at most C.
  removed, _, _ = per_example.clipped_tree_sum(tree, mask.at[3].set(False), clip)
  assert _norm(jax.tree_util.tree_map(jnp.subtract, removed, base)) <= clip * (1 + 1e-5)


def test_nonfinite_and_masked_examples_contribute_zero():
  clip, batch = 1.0, 8
  tree = _per_example_tree(jax.random.PRNGKey(2), batch)
  bad = jax.tree_util.tree_map(lambda x: x.at[2].set(jnp.nan).at[5].set(jnp.inf), tree)
  mask = jnp.ones(batch, bool).at[6].set(False)
  s, norms, valid = per_example.clipped_tree_sum(bad, mask, clip)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(s))
  np.testing.assert_array_equal(np.asarray(valid),
                                [True, True, False, True, True, False, False, True])
  keep = jnp.array([0, 1, 3, 4, 7])
  expected, _, _ = per_example.clipped_tree_sum(
      jax.tree_util.tree_map(lambda x: x[keep], tree), jnp.ones(5, bool), clip)
  for a, b in zip(jax.tree_util.tree_leaves(s), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_empty_batch_sums_to_zero():
  tree = _per_example_tree(jax.random.PRNGKey(3), 4)
  s, _, valid = per_example.clipped_tree_sum(tree, jnp.zeros(4, bool), 1.0)
  assert not bool(valid.any())
  assert _norm(s) == 0.0


@pytest.mark.parametrize('mask_only_if_nonfinite', [False, True])
def test_masking_only_when_nonfinite_gives_the_same_sum(mask_only_if_nonfinite):
  """The shortcut (zeroing pass only if some norm is not finite) changes nothing:
  with all norms finite, padding slots get factor 0; with an inf, the pass runs."""
  tree = _per_example_tree(jax.random.PRNGKey(6), 6)
  mask = jnp.array([True, True, False, True, True, True])
  for bad in (None, 4):
    t = tree if bad is None else jax.tree_util.tree_map(
        lambda x: x.at[bad].set(jnp.inf), tree)
    ref = per_example.clipped_tree_sum(t, mask, 1.0)
    got = jax.jit(per_example.clipped_tree_sum, static_argnums=(2, 3))(
        t, mask, 1.0, mask_only_if_nonfinite)
    for a, b in zip(jax.tree_util.tree_leaves(got[0]), jax.tree_util.tree_leaves(ref[0])):
      assert np.all(np.isfinite(np.asarray(a)))
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[2], ref[2])


def test_weighted_sum_zeroes_invalid_examples_before_scaling():
  x = jnp.array([[1.0, 2.0], [jnp.nan, 1.0], [3.0, 4.0]])
  factors = jnp.array([0.5, 0.0, 2.0])
  valid = jnp.array([True, False, True])
  np.testing.assert_allclose(per_example.weighted_sum(factors, x, valid), [6.5, 9.0])
  assert np.isnan(np.asarray(per_example.weighted_sum(factors, x))[0])
  np.testing.assert_allclose(per_example.sq_norms(x[jnp.array([0, 2])]), [5.0, 25.0])


def test_augmult_views_are_averaged_before_clipping():
  """K views of one example: one gradient (their mean) is clipped, so the example's
  contribution is at most C, not K * C."""
  def loss_fn(params, views, label, key):
    del key
    return jnp.mean((views @ params['w'] - label) ** 2)

  params = {'w': jnp.ones((3,))}
  views = jax.random.normal(jax.random.PRNGKey(4), (6, 16, 3)) * 50.0  # B=6, K=16
  labels = jnp.arange(6.0)
  keys = jax.random.split(jax.random.PRNGKey(5), 6)
  grads, _ = vmap.per_example_grads(loss_fn, params, views, labels, keys)
  # The per-example gradient is the mean of the per-view gradients.
  view_grads = jax.vmap(jax.vmap(jax.grad(
      lambda p, v, y: jnp.mean((v[None] @ p['w'] - y) ** 2)), (None, 0, None)),
                        (None, 0, 0))(params, views, labels)
  np.testing.assert_allclose(grads['w'], view_grads['w'].mean(axis=1), rtol=1e-4)
  s, norms, _ = per_example.clipped_tree_sum(grads, jnp.ones(6, bool), 1.0)
  assert float(norms.min()) > 1.0  # all clipped
  for i in range(6):
    one = jnp.zeros(6, bool).at[i].set(True)
    si, _, _ = per_example.clipped_tree_sum(grads, one, 1.0)
    assert _norm(si) <= 1.0 + 1e-5

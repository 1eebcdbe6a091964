"""The registry of clipped-sum implementations and the per-layer rules: every
registered implementation gives the reference ('vmap') clipped sum on a model with
every registered layer kind, and a parameter-owning layer with no registered rule
takes the generic per-example VJP (exact, only slower)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from image_classification.models import layers
from image_classification.privacy import clipped_sums
from image_classification.privacy.clipped_sums import layer_rules
from image_classification.privacy.clipped_sums import tape


def test_names_and_unknown_name():
  assert clipped_sums.names()[:3] == ('vmap', 'fast', 'ghost')
  with pytest.raises(ValueError, match=r"per_example_grads='ghosts'.*'vmap'"):
    clipped_sums.get('ghosts')
  with pytest.raises(ValueError, match='registered twice'):
    clipped_sums.register('vmap')(lambda *a: None)
  with pytest.raises(ValueError, match='registered twice'):
    layer_rules.register(nn.Dense, layer_rules.GENERIC)


class _Unregistered(nn.Module):
  """A parameter-owning layer kind no rule is registered for."""

  @nn.compact
  def __call__(self, x):
    return x * self.param('scale', nn.initializers.ones, (x.shape[-1],)) + 0.1


# One instance of every registered layer class (a new registration must add its
# kind here), grouped variants, the unregistered kind, and a Dense head.
LAYERS = {
    nn.Conv: [('conv', lambda n: nn.Conv(4, (3, 3), name=n)),
              ('grouped_conv', lambda n: nn.Conv(4, (3, 3), feature_group_count=2, name=n))],
    layers.WSConv: [('ws_conv', lambda n: layers.WSConv(4, 3, name=n)),
                    ('grouped_scaled_ws_conv',
                     lambda n: layers.ScaledWSConv(4, 3, feature_group_count=2,
                                                    name=n))],
    nn.Dense: [('dense', lambda n: nn.Dense(5, name=n))],
}
RULE_NAMES = {'conv': 'conv', 'grouped_conv': 'conv', 'ws_conv': 'ws_conv',
              'grouped_scaled_ws_conv': 'ws_conv', 'unregistered': 'generic',
              'dense': 'dense', 'head': 'dense'}


class _EveryLayer(nn.Module):

  @nn.compact
  def __call__(self, x, is_training=False):
    del is_training
    for cls in (nn.Conv, layers.WSConv):
      for name, make in LAYERS[cls]:
        x = jnp.tanh(make(name)(x))
    x = _Unregistered(name='unregistered')(x)
    x = jnp.tanh(LAYERS[nn.Dense][0][1]('dense')(x.reshape(x.shape[0], -1)))
    return nn.Dense(3, name='head')(x)


def test_the_model_covers_every_registered_layer_class():
  assert set(layer_rules.registered()) == set(LAYERS)


def _setup(augmult, batch=5):
  model = _EveryLayer()
  k_p, k_x, k_y = jax.random.split(jax.random.PRNGKey(0), 3)
  views = jax.random.normal(k_x, (batch, augmult, 6, 6, 2))
  params = model.init(k_p, views[0])['params']
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(k_p, len(leaves))
  params = jax.tree_util.tree_unflatten(treedef, [
      x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  labels = jax.random.randint(k_y, (batch,), 0, 3)

  def loss_fn(p, v, y, k):
    del k
    logits = model.apply({'params': p}, v)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, v.shape[:1])))

  return loss_fn, params, views, labels, jax.random.split(k_y, batch)


def test_each_layer_gets_its_rule_and_the_unregistered_one_the_generic_rule():
  loss_fn, params, views, labels, keys = _setup(augmult=1)
  calls = []

  def capture(*args):
    r = tape.record(loss_fn, *args)
    calls.extend(r.calls)
    return r.losses

  jax.eval_shape(capture, params, views, labels, keys)
  assert {c.path[-1]: c.rule.name for c in calls} == RULE_NAMES


@pytest.mark.parametrize('augmult', [1, 2])  # 1: ghost's one-vector Dense route
def test_every_implementation_equals_vmap(augmult):
  loss_fn, params, views, labels, keys = _setup(augmult)
  mask = jnp.ones(labels.shape, bool).at[1].set(False)

  @functools.partial(jax.jit, static_argnums=0)
  def run(name, clip):
    return clipped_sums.get(name)(loss_fn, params, views, labels, keys, mask, clip)

  norms = run('vmap', 1.0)[1]
  clip = float(jnp.median(norms))  # about half the examples are clipped
  ref_sum, ref_norms, ref_valid, ref_losses = run('vmap', clip)
  for name in clipped_sums.names():
    summed, got_norms, valid, losses = run(name, clip)
    np.testing.assert_allclose(got_norms, ref_norms, rtol=1e-4, err_msg=name)
    np.testing.assert_array_equal(valid, ref_valid)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    assert jax.tree_util.tree_structure(summed) == jax.tree_util.tree_structure(ref_sum)
    for a, b in zip(jax.tree_util.tree_leaves(summed), jax.tree_util.tree_leaves(ref_sum)):
      scale = max(float(jnp.max(jnp.abs(b))), 1.0)
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5 * scale, err_msg=name)

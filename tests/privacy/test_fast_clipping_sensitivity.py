"""Adversarial sensitivity checks of the clipped-sum implementations.

DESIGN.md, privacy invariant 11: the norm used to clip an example must be the norm of
the vector that is added to the sum, for every input. These tests build inputs and
parameters under which float32 cancellation is at its worst (near-constant inputs,
inputs at 1e4 and 1e-4, heads scaled by 1e6, gradients almost entirely along the
directions that weight standardisation removes) and measure each example's actual
contribution to the clipped sum: the norm of the sum when every other example is
masked out. It must not exceed C (up to float rounding of the final scaling).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from image_classification.models import layers
from image_classification.privacy import clipping
from image_classification.privacy import fast_clipping

TOL = 1 + 1e-5


def _tree_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                           for x in jax.tree_util.tree_leaves(tree))))


def _clipped_sum(impl, loss_fn, params, views, labels, keys, mask, clip):
  if impl == 'vmap':
    grads, _ = clipping.per_example_grads(loss_fn, params, views, labels, keys)
    return clipping.clipped_sum(grads, mask, clip)[0]
  return fast_clipping.clipped_sum(loss_fn, params, views, labels, keys, mask, clip,
                                   keep_per_example=impl == 'fast')[0]


def contributions(impl, loss_fn, params, views, labels, keys, clip):
  """||clipped sum with only example i unmasked|| for every i: [B] (float64)."""
  batch = labels.shape[0]

  @jax.jit
  def run(params, views, labels, keys):
    def one(mask):
      return _clipped_sum(impl, loss_fn, params, views, labels, keys, mask, clip)
    return jax.lax.map(one, jnp.eye(batch, dtype=bool))

  sums = jax.device_get(run(params, views, labels, keys))
  leaves = [np.asarray(x, np.float64).reshape(batch, -1)
            for x in jax.tree_util.tree_leaves(sums)]
  return np.sqrt(sum(np.sum(x * x, axis=1) for x in leaves))


def _loss_fn(model):
  def loss_fn(p, v, y, k):
    del k
    logits = model.apply({'params': p}, v)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, v.shape[:1])))
  return loss_fn


class _WSConvHead(nn.Module):
  """The issue's reproduction: a 3x3 VALID WS conv, then a Dense head."""

  @nn.compact
  def __call__(self, x):
    x = layers.WSConv(4, 3, padding='VALID', name='conv')(x)
    return nn.Dense(3, name='head')(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize('impl', ['vmap', 'fast', 'ghost'])
def test_ws_conv_gradient_along_removed_directions_is_clipped(impl):
  """Inputs 1 + 1e-4 N(0, 1) and a head scaled by 1e6: each filter's gradient lies
  almost entirely along the constant direction and the standardised filter, which
  the standardisation removes. Before the fix 'fast' and 'ghost' took the norm as
  |h|^2 - (sum h)^2 / n - <w_hat, h>^2 (cancelling to ~0 in float32) while adding
  the true, large residual: up to 417 C per example."""
  model = _WSConvHead()
  batch = 32
  k_x, k_p, k_y = jax.random.split(jax.random.PRNGKey(0), 3)
  views = 1.0 + 1e-4 * jax.random.normal(k_x, (batch, 1, 6, 6, 2))
  params = model.init(k_p, views[0])['params']
  params['head']['kernel'] = params['head']['kernel'] * 1e6
  labels = jax.random.randint(k_y, (batch,), 0, 3)
  keys = jax.random.split(jax.random.PRNGKey(1), batch)
  got = contributions(impl, _loss_fn(model), params, views, labels, keys, 1.0)
  assert np.all(got <= TOL), (impl, np.sort(got)[-5:])


# ------------------------------------------------------------ every layer kind
# One parameter-owning layer of each kind the fast paths have a rule for, then a
# Dense head with a bias. 'dense' applies a Dense layer to every pixel (a sequence of
# H*W vectors per view) and sees one view per example, so its head takes the
# one-vector Dense route; the others see two views (augmult). With ``center`` the
# layer's output is centred over the pixels of each view (as an instance norm
# does): its output gradients then sum to ~0 over positions, so with near-constant
# inputs its kernel and bias gradients are small differences of large terms; without
# it, a near-constant input puts a WS conv's gradient along the constant filter.
LAYERS = {
    'dense': lambda: nn.Dense(4),
    'conv': lambda: nn.Conv(4, (3, 3)),
    'grouped_conv': lambda: nn.Conv(4, (3, 3), feature_group_count=2),
    'ws_conv': lambda: layers.WSConv(4, 3, padding='VALID'),
    'scaled_ws_conv': lambda: layers.ScaledWSConv(4, 3),  # NF models': gain, bias
    'grouped_scaled_ws_conv': lambda: layers.ScaledWSConv(4, 3, feature_group_count=2),
}

# name -> views as a function of N(0, 1) noise.
INPUTS = {
    'near_constant': lambda z: 1.0 + 1e-4 * z,
    'large': lambda z: 1e4 * (1.0 + 1e-4 * z),
    'tiny': lambda z: 1e-4 * (1.0 + 1e-4 * z),
    'normal': lambda z: z,
}


class _OneLayer(nn.Module):
  kind: str
  center: bool = False

  @nn.compact
  def __call__(self, x, is_training=False):
    del is_training
    h = LAYERS[self.kind]()(x)
    if self.center:
      h = h - jnp.mean(h, axis=(-3, -2), keepdims=True)
    return nn.Dense(3, name='head')(h.reshape(h.shape[0], -1))


def _scale_head(params, scale):
  """The head's kernel times ``scale``: the layer below gets output gradients
  ``scale`` times larger (logits saturate for some examples, not all)."""
  params = dict(params)
  params['head'] = dict(params['head'], kernel=params['head']['kernel'] * scale)
  return params


def _median_positive(norms):
  """The median of the positive finite norms (1 if none): about half the examples
  with a gradient are clipped."""
  ok = jnp.isfinite(norms) & (norms > 0)
  clip = jnp.nanmedian(jnp.where(ok, norms, jnp.nan))
  return jnp.where(jnp.isfinite(clip), clip, 1.0)


@pytest.mark.parametrize('center', [False, True], ids=['plain', 'centered'])
@pytest.mark.parametrize('kind', sorted(LAYERS))
def test_every_example_contributes_at_most_c(kind, center):
  """'vmap', 'fast' and 'ghost', every input family, the head scaled by 1 and 1e6:
  each example's masked contribution is <= C (1 + 1e-5)."""
  model = _OneLayer(kind, center)
  batch, augmult = 8, (1 if kind == 'dense' else 2)
  shape = (batch, augmult, 5, 5, 2)
  params0 = model.init(jax.random.PRNGKey(0), jnp.zeros(shape[1:]))['params']
  labels = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 3)
  keys = jax.random.split(jax.random.PRNGKey(2), batch)
  loss_fn = _loss_fn(model)
  impls = ('vmap', 'fast', 'ghost')

  @jax.jit
  def run(params, views):
    grads, _ = clipping.per_example_grads(loss_fn, params, views, labels, keys)
    clip = _median_positive(clipping.global_norms(grads))

    def one(mask):
      return [_clipped_sum(impl, loss_fn, params, views, labels, keys, mask, clip)
              for impl in impls]
    return clip, jax.lax.map(one, jnp.eye(batch, dtype=bool))

  failures = []
  for i, (name, make) in enumerate(sorted(INPUTS.items())):
    views = make(jax.random.normal(jax.random.PRNGKey(3 + i), shape))
    for scale in (1.0, 1e6):
      clip, sums = jax.device_get(run(_scale_head(params0, scale), views))
      assert np.isfinite(clip) and clip > 0
      for impl, tree in zip(impls, sums):
        leaves = [np.asarray(x, np.float64).reshape(batch, -1)
                  for x in jax.tree_util.tree_leaves(tree)]
        got = np.sqrt(sum(np.sum(x * x, axis=1) for x in leaves)) / float(clip)
        if not np.all(got <= TOL):
          failures.append(f'{impl} {name} head x{scale:g}: max {got.max():.6g} C')
  assert not failures, failures

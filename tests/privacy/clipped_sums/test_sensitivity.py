"""Adversarial sensitivity checks of the clipped-sum implementations.

docs/privacy.md, invariant 11: the norm used to clip an example must be the norm of
the vector that is added to the sum, for every input. These tests build inputs and
parameters under which float32 cancellation is at its worst (near-constant inputs,
inputs at 1e4 and 1e-4, heads scaled by 1e6, gradients almost entirely along the
directions that weight standardisation removes) and measure each example's actual
contribution to the clipped sum: the norm of the sum when every other example is
masked out. It must not exceed C (up to float rounding of the final scaling).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from image_classification.models import layers
from image_classification.privacy import clipped_sums
from image_classification.privacy.clipped_sums import per_example
from image_classification.privacy.clipped_sums import vmap

TOL = 1 + 1e-5


def _tree_norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                           for x in jax.tree_util.tree_leaves(tree))))


def _clipped_sum(impl, loss_fn, params, views, labels, keys, mask, clip):
  return clipped_sums.get(impl)(loss_fn, params, views, labels, keys, mask, clip)[0]


def _norms_per_example(tree, batch) -> np.ndarray:
  leaves = [np.asarray(x, np.float64).reshape(batch, -1)
            for x in jax.tree_util.tree_leaves(tree)]
  return np.sqrt(sum(np.sum(x * x, axis=1) for x in leaves))


def contributions(impls, loss_fn, params, views, labels, keys, clip) -> dict:
  """{impl: ||clipped sum with only example i unmasked|| for every i, [B]}."""
  batch = labels.shape[0]

  @jax.jit
  def run(params, views, labels, keys):
    def one(mask):
      return [_clipped_sum(impl, loss_fn, params, views, labels, keys, mask, clip)
              for impl in impls]
    return jax.lax.map(one, jnp.eye(batch, dtype=bool))

  sums = jax.device_get(run(params, views, labels, keys))
  return {impl: _norms_per_example(tree, batch) for impl, tree in zip(impls, sums)}


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


def test_ws_conv_gradient_along_removed_directions_is_clipped():
  """The issue's reproduction. Inputs 1 + 1e-4 N(0, 1) and a head scaled by 1e6:
  each filter's gradient lies almost entirely along the constant direction and the
  standardised filter, which the standardisation removes. Before the fix 'fast' and
  'ghost' took the squared norm as |h|^2 - (sum h)^2 / n - <w_hat, h>^2 (cancelling
  to ~0 in float32) while adding the true residual: up to 689 C for one example
  ('vmap', the control: 1.00 C)."""
  model = _WSConvHead()
  batch = 32
  k_x, k_p, k_y = jax.random.split(jax.random.PRNGKey(0), 3)
  views = 1.0 + 1e-4 * jax.random.normal(k_x, (batch, 1, 6, 6, 2))
  params = model.init(k_p, views[0])['params']
  params['head']['kernel'] = params['head']['kernel'] * 1e6
  labels = jax.random.randint(k_y, (batch,), 0, 3)
  keys = jax.random.split(jax.random.PRNGKey(1), batch)
  got = contributions(('vmap', 'fast', 'ghost'), _loss_fn(model), params, views,
                      labels, keys, 1.0)
  for impl, g in got.items():
    assert np.all(g <= TOL), (impl, np.sort(g)[-5:])
  assert np.median(got['vmap']) > 0.99  # most examples are clipped: not vacuous


# ------------------------------------------------------------ every layer kind
# One parameter-owning layer of each kind the fast paths have a rule for, then a
# Dense head with a bias. 'dense' applies a Dense layer to every pixel (a sequence of
# H*W vectors per view) and sees one view per example, so its head takes the
# one-vector Dense route; the others see two views (augmult). With ``center`` = 1 the
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
  """``center`` (a constant, not a parameter: 0 or 1) is read from the 'consts'
  collection when given there, so both variants share one compilation."""
  kind: str
  center: float = 0.0

  @nn.compact
  def __call__(self, x, is_training=False):
    del is_training
    h = LAYERS[self.kind]()(x)
    center = (self.get_variable('consts', 'center')
              if self.has_variable('consts', 'center') else self.center)
    h = h - center * jnp.mean(h, axis=(-3, -2), keepdims=True)
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


@pytest.mark.parametrize('kind', sorted(LAYERS))
def test_every_example_contributes_at_most_c(kind):
  """'vmap', 'fast' and 'ghost'; every input family; the layer's output centred or
  not; the head scaled by 1 and 1e6: each example's masked contribution is
  <= C (1 + 1e-5), with C the median reference norm (about half are clipped)."""
  model = _OneLayer(kind)
  batch, augmult = 8, (1 if kind == 'dense' else 2)
  shape = (batch, augmult, 5, 5, 2)
  params0 = model.init(jax.random.PRNGKey(0), jnp.zeros(shape[1:]))['params']
  labels = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 3)
  keys = jax.random.split(jax.random.PRNGKey(2), batch)
  impls = ('vmap', 'fast', 'ghost')

  @jax.jit
  def run(params, views, center):
    def loss_fn(p, v, y, k):
      del k
      logits = model.apply({'params': p, 'consts': {'center': center}}, v)
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits, jnp.broadcast_to(y, v.shape[:1])))

    grads, _ = vmap.per_example_grads(loss_fn, params, views, labels, keys)
    clip = _median_positive(per_example.global_norms(grads))

    def one(mask):
      return [_clipped_sum(impl, loss_fn, params, views, labels, keys, mask, clip)
              for impl in impls]
    return clip, jax.lax.map(one, jnp.eye(batch, dtype=bool))

  failures = []
  for i, (name, make) in enumerate(sorted(INPUTS.items())):
    views = make(jax.random.normal(jax.random.PRNGKey(3 + i), shape))
    for center in (0.0, 1.0):
      for scale in (1.0, 1e6):
        clip, sums = jax.device_get(run(_scale_head(params0, scale), views, center))
        assert np.isfinite(clip) and clip > 0
        for impl, tree in zip(impls, sums):
          got = _norms_per_example(tree, batch) / float(clip)
          if not np.all(got <= TOL):
            failures.append(f'{impl} {name} center={center:g} head x{scale:g}: '
                            f'max {got.max():.6g} C')
  assert not failures, failures


# ------------------------------------------------------------ through the DP step


def recording_sgd() -> optax.GradientTransformation:
  """Plain SGD with learning rate 1 whose state is the last update, so a test reads
  the update exactly instead of subtracting parameters of size 1e6."""
  def update(grads, state, params=None):
    del state, params
    updates = jax.tree_util.tree_map(jnp.negative, grads)
    return updates, updates
  return optax.GradientTransformation(
      lambda params: jax.tree_util.tree_map(jnp.zeros_like, params), update)


_DP_STEP_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {root!r})
from image_classification.privacy import privatizers
from image_classification.training import dp_step, mesh as mesh_lib
from tests.privacy.clipped_sums import test_sensitivity as t
model = t._OneLayer('ws_conv')
batch, size = 8, 6
params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 2)))['params']
params = jax.device_get(t._scale_head(params, 1e6))
rng = np.random.default_rng(0)
# Near-constant images: 200, a few pixels 201; standardised to about 1e4.
images = (200 + (rng.random((batch, size, size, 2)) < 0.05)).astype(np.uint8)
labels = rng.integers(0, 3, batch).astype(np.int32)
opt = t.recording_sgd()
out = {{}}
for impl, n, augmult in {configs!r}:
  mesh = mesh_lib.make_mesh(jax.devices()[:n])
  cfg = dp_step.StepConfig(
      clipping_norm={clip!r}, expected_batch_size=float(batch),
      micro_batch_size=2, augmult=augmult, random_flip=True, mean=(0.0,), std=(1e-4,),
      per_example_grads=impl)
  step = dp_step.DPStep(model.apply, opt, cfg, mesh, jax.random.PRNGKey(1),
                        noise_key=jax.random.PRNGKey(2),
                        privatizer=privatizers.GaussianPrivatizer(0.0))
  norms = []
  for i in range(batch):
    state = jax.device_put(dp_step.init_state(params, opt, False),
                           mesh_lib.replicated(mesh))
    mask = np.arange(batch) == i
    new, _ = step.run(state, [jax.device_put((images, labels, mask),
                                             mesh_lib.batch_sharding(mesh))])
    update = jax.device_get(new.opt_state)
    norms.append(float(np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2)
                                   for x in jax.tree_util.tree_leaves(update)))))
  out['%s/%d devices/augmult %d' % (impl, n, augmult)] = norms
print(json.dumps(out))
"""


def test_dp_step_one_example_moves_the_update_by_at_most_c_over_b():
  """The real DP step (noise 0, SGD with learning rate 1), on 1 and 4 devices, with
  augmult 2 and micro-batches: with a single example unmasked, the update's norm is
  <= C / expected batch size (1 + 1e-5), for a WS conv under a 1e6 head on
  near-constant images standardised to ~1e4."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
  clip, batch = 1.0, 8
  configs = [('fast', 1, 2), ('ghost', 1, 2), ('fast', 4, 2), ('ghost', 4, 2)]
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  script = _DP_STEP_SCRIPT.format(root=root, configs=configs, clip=clip)
  proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  bound = clip / batch * TOL
  failures = {k: max(v) * batch / clip for k, v in out.items() if max(v) > bound}
  assert not failures, f'largest update, in units of C / B: {failures}'
  # Not vacuous: most examples are clipped to C (a saturated softmax gives others 0).
  for name, norms in out.items():
    assert np.median(norms) > 0.9 * clip / batch, (name, norms)

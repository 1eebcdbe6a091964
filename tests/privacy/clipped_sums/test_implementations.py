"""The 'fast' and 'ghost' clipped sums (and the tape's per-example gradients) equal
the reference 'vmap' for every model family, with weight sharing, generic modules,
non-finite examples, inside the DP step and on 4 devices."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from image_classification.models import registry
from image_classification.privacy import clipped_sums
from image_classification.privacy.clipped_sums import fast
from image_classification.privacy.clipped_sums import layer_rules
from image_classification.privacy.clipped_sums import per_example
from image_classification.privacy.clipped_sums import vmap
from image_classification.privacy import privatizers
from image_classification.training import dp_step
from image_classification.training import mesh as mesh_lib

# name, registry kwargs, image shape: small variants of every family.
MODELS = {
    'cnn': ('cnn', dict(channels=(8, 16), hidden=12, activation='tanh'), (8, 8, 1)),
    'cnn_flatten': ('cnn', dict(channels=(6,), flatten=True), (6, 6, 1)),
    'tanh_cnn': ('tanh_cnn', {}, (28, 28, 1)),
    'wide_resnet': ('wide_resnet', dict(depth=10, width=1, groups=4), (12, 12, 3)),
    'wide_resnet_skipinit': ('wide_resnet', dict(depth=10, width=1, groups=4,
                                                 skip_init=True), (8, 8, 3)),
    'nf_resnet': ('nf_resnet', dict(depth=26, width=0.0625, se_ratio=0.25),
                  (16, 16, 3)),
    'nfnet': ('nfnet', dict(variant='F0', width=0.0625, group_width=8,
                            final_conv_mult=0.5), (16, 16, 3)),
}


def _setup(name, batch=5, augmult=1, seed=0):
  family, kwargs, shape = MODELS[name]
  model = registry.build(family, 3, **kwargs)
  key = jax.random.PRNGKey(seed)
  k_init, k_x, k_y, k_p = jax.random.split(key, 4)
  params = model.init({'params': k_init, 'dropout': k_init},
                      jnp.zeros((1,) + shape), is_training=False)['params']
  # Perturb every parameter (NF heads and skip gains start at zero, which would hide
  # errors in the layers behind them).
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(k_p, len(leaves))
  params = jax.tree_util.tree_unflatten(treedef, [
      x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  views = jax.random.normal(k_x, (batch, augmult) + shape)
  labels = jax.random.randint(k_y, (batch,), 0, 3)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), batch)

  def loss_fn(p, v, y, k):
    logits = model.apply({'params': p}, v, is_training=True, rngs={'dropout': k})
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, v.shape[:1])))

  return loss_fn, params, views, labels, keys


def _assert_trees_close(a, b, rtol=2e-4, atol=1e-5):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.shape == y.shape
    scale = float(jnp.max(jnp.abs(y))) + 1e-6
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol * max(scale, 1.0))


def _all(loss_fn, params, views, labels, keys, mask, clip=None):
  """Reference and fast results in one jit (one compilation per model). The default
  clipping norm is the median reference norm: some examples are clipped, some not."""
  ref, ref_losses = vmap.per_example_grads(loss_fn, params, views, labels, keys)
  if clip is None:
    clip = jnp.nanmedian(per_example.global_norms(ref))
  ref_sum, ref_norms, ref_valid = per_example.clipped_tree_sum(ref, mask, clip)
  taped, losses = fast.per_example_grads(loss_fn, params, views, labels, keys)
  args = (loss_fn, params, views, labels, keys, mask, clip)
  return dict(ref=ref, ref_losses=ref_losses, ref_sum=ref_sum, ref_norms=ref_norms,
              ref_valid=ref_valid, fast=taped, losses=losses,
              ghost=clipped_sums.get('ghost')(*args), kept=clipped_sums.get('fast')(*args))


# The NF families take minutes to compile on a 2-core CPU: run with `pytest -m slow`.
_SLOW_MODELS = ('nf_resnet', 'nfnet')


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_MODELS else n
    for n in sorted(MODELS)])
def test_fast_paths_equal_reference(name):
  """Per-example gradients, norms and clipped sums (both fast modes) == vmap(grad)."""
  augmult = 2 if name in ('cnn', 'wide_resnet', 'nfnet') else 1
  loss_fn, params, views, labels, keys = _setup(name, augmult=augmult)
  mask = jnp.ones(labels.shape, bool).at[1].set(False)
  r = jax.jit(functools.partial(_all, loss_fn))(params, views, labels, keys, mask)
  np.testing.assert_allclose(r['losses'], r['ref_losses'], rtol=1e-5, atol=1e-6)
  _assert_trees_close(r['fast'], r['ref'])
  ref_norms = r['ref_norms']
  np.testing.assert_allclose(per_example.global_norms(r['fast']), ref_norms, rtol=1e-4)
  for mode in ('ghost', 'kept'):
    summed, norms, valid, losses = r[mode]
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-4, err_msg=mode)
    np.testing.assert_array_equal(valid, r['ref_valid'])
    np.testing.assert_allclose(losses, r['ref_losses'], rtol=1e-5, atol=1e-6)
    _assert_trees_close(summed, r['ref_sum'])


@pytest.mark.parametrize('name', [
    'wide_resnet', pytest.param('nfnet', marks=pytest.mark.slow)])
def test_per_tap_kernel_gradient_equals_reference(monkeypatch, name):
  """Convs with many input channels take one matmul per kernel tap (no im2col)."""
  monkeypatch.setattr(layer_rules, 'IM2COL_MAX_CHANNELS', 1)
  loss_fn, params, views, labels, keys = _setup(name, batch=3)
  mask = jnp.ones(3, bool)
  r = jax.jit(functools.partial(_all, loss_fn))(params, views, labels, keys, mask)
  _assert_trees_close(r['fast'], r['ref'])
  for mode in ('ghost', 'kept'):
    _assert_trees_close(r[mode][0], r['ref_sum'])


class _Shared(nn.Module):
  """One Dense layer applied twice (weight sharing) and a parameter-owning module
  that is neither Dense nor Conv (the generic path), with a child."""

  @nn.compact
  def __call__(self, x, is_training=False):
    del is_training
    x = x.reshape(x.shape[0], -1)[:, :6]
    dense = nn.Dense(6, name='shared')
    x = jnp.tanh(dense(jnp.tanh(dense(x))))
    x = _ScaleThenDense(name='custom')(x)
    return nn.Dense(3, name='head')(x)


class _ScaleThenDense(nn.Module):

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.ones, (x.shape[-1],))
    return nn.Dense(4, name='inner')(x * scale) ** 2


def test_weight_sharing_and_generic_modules():
  model = _Shared()
  views = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 3, 3, 1))
  labels = jnp.array([0, 1, 2, 1])
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  params = model.init(jax.random.PRNGKey(2), views[0])['params']

  def loss_fn(p, v, y, k):
    del k
    logits = model.apply({'params': p}, v)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, v.shape[:1])))

  mask = jnp.ones(4, bool)
  r = jax.jit(functools.partial(_all, loss_fn))(params, views, labels, keys, mask)
  _assert_trees_close(r['fast'], r['ref'])
  for mode in ('ghost', 'kept'):
    _assert_trees_close(r[mode][0], r['ref_sum'])


def test_nonfinite_example_contributes_zero():
  """An example whose gradient is NaN is zeroed, as in the reference."""
  loss_fn, params, views, labels, keys = _setup('cnn', batch=4)
  views = views.at[2].set(jnp.nan)
  mask = jnp.ones(4, bool)
  r = jax.jit(functools.partial(_all, loss_fn))(params, views, labels, keys, mask)
  assert not bool(r['ref_valid'][2])
  for mode in ('ghost', 'kept'):
    summed, _, valid, _ = r[mode]
    np.testing.assert_array_equal(valid, r['ref_valid'])
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(summed))
    _assert_trees_close(summed, r['ref_sum'])


def test_method_called_from_outside_is_refused():
  class Odd(nn.Module):
    @nn.compact
    def __call__(self, x, is_training=False):
      del is_training
      return _WithMethod(name='inner').project(x.reshape(x.shape[0], -1))

  model = Odd()
  views = jnp.ones((2, 1, 2, 2, 1))
  params = model.init(jax.random.PRNGKey(0), views[0])['params']
  loss_fn = lambda p, v, y, k: jnp.sum(model.apply({'params': p}, v))
  with pytest.raises(NotImplementedError, match='project'):
    fast.per_example_grads(loss_fn, params, views, jnp.zeros(2, jnp.int32),
                           jax.random.split(jax.random.PRNGKey(0), 2))


class _WithMethod(nn.Module):

  @nn.compact
  def __call__(self, x):
    return self.project(x)

  @nn.compact
  def project(self, x):
    return x @ self.param('w', nn.initializers.ones, (x.shape[-1], 2))


@pytest.mark.parametrize('train_only_head', [False, True])
@pytest.mark.parametrize('impl', ['fast', 'ghost'])
def test_dp_step_with_fast_paths_equals_reference(impl, train_only_head):
  """The whole DP step (augmult with flips, micro-batches, padding, noise, update)
  gives the same new parameters and statistics with every implementation, also when
  only the head is trained (fine-tuning: the backbone is frozen, not differentiated)."""
  model = registry.build('cnn', 3, channels=(8,), hidden=5)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 1)))['params']
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 6, 6, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, 8).astype(np.int32)
  mask = np.ones(8, bool)
  mask[5] = False
  mesh = mesh_lib.make_mesh()
  out = {}
  for name in ('vmap', impl):
    cfg = dp_step.StepConfig(
        clipping_norm=0.5, expected_batch_size=8.0,
        micro_batch_size=4, augmult=2, random_flip=True, random_crop=True,
        per_example_grads=name)
    optimizer = optax.sgd(0.5)
    step = dp_step.DPStep(model.apply, optimizer, cfg, mesh, jax.random.PRNGKey(1),
                          noise_key=jax.random.PRNGKey(2),
                          privatizer=privatizers.GaussianPrivatizer(1.5 * 0.5))
    state = jax.device_put(
        dp_step.init_state(jax.tree_util.tree_map(jnp.copy, params), optimizer,
                           train_only_head),
        mesh_lib.replicated(mesh))
    batch = jax.device_put((images, labels, mask), mesh_lib.batch_sharding(mesh))
    new_state, stats = step.run(state, [batch])
    out[name] = (jax.device_get(new_state.params), jax.device_get(stats))
    if train_only_head:
      assert set(out[name][0]) == {'head'}
  _assert_trees_close(out[impl][0], out['vmap'][0], rtol=1e-5, atol=1e-6)
  for k, v in out['vmap'][1].items():
    np.testing.assert_allclose(out[impl][1][k], v, rtol=1e-5, err_msg=k)


def test_unknown_implementation_is_refused():
  """The registry's error, raised when the step is built, names the choices."""
  cfg = dp_step.StepConfig(clipping_norm=1.0, expected_batch_size=4.0,
                           micro_batch_size=0,
                           per_example_grads='ghosts')
  with pytest.raises(ValueError, match=r"per_example_grads='ghosts'.*'vmap', 'fast'"):
    dp_step.DPStep(lambda *a, **k: None, optax.sgd(1.0), cfg, mesh_lib.make_mesh(),
                   jax.random.PRNGKey(0), noise_key=jax.random.PRNGKey(1),
                   privatizer=privatizers.GaussianPrivatizer(1.0))


_MULTI_DEVICE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
sys.path.insert(0, {root!r})
from image_classification.models import registry
from image_classification.privacy import privatizers
from image_classification.training import dp_step, mesh as mesh_lib
model = registry.build('cnn', 3, channels=(8,), hidden=5)
params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 6, 6, 1)))['params']
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (16, 6, 6, 1), dtype=np.uint8)
labels = rng.integers(0, 3, 16).astype(np.int32)
mask = np.ones(16, bool); mask[5] = False
out = {{}}
for impl, n in (('vmap', 1), ('fast', 4), ('ghost', 4)):
  mesh = mesh_lib.make_mesh(jax.devices()[:n])
  cfg = dp_step.StepConfig(clipping_norm=0.5, expected_batch_size=16.0,
                           micro_batch_size=2, augmult=2, random_flip=True,
                           per_example_grads=impl)
  opt = optax.sgd(1.0)
  step = dp_step.DPStep(model.apply, opt, cfg, mesh, jax.random.PRNGKey(1),
                        noise_key=jax.random.PRNGKey(2),
                        privatizer=privatizers.GaussianPrivatizer(0.0))
  state = jax.device_put(dp_step.init_state(jax.tree_util.tree_map(jnp.copy, params), opt,
                                            False), mesh_lib.replicated(mesh))
  batch = jax.device_put((images, labels, mask), mesh_lib.batch_sharding(mesh))
  new, stats = step.run(state, [batch])
  out[impl] = np.concatenate([np.ravel(x) for x in
                              jax.tree_util.tree_leaves(jax.device_get(new.params))]).tolist()
print(json.dumps(out))
"""


def test_four_devices_fast_paths_equal_one_device_reference():
  """Sharded over 4 devices, the fast paths keep each device's output gradients to
  its own examples (no cross-device sum before clipping) and match the reference."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _MULTI_DEVICE_SCRIPT.format(root=root)],
                        env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  for impl in ('fast', 'ghost'):
    np.testing.assert_allclose(out[impl], out['vmap'], rtol=1e-4, atol=1e-6,
                               err_msg=impl)

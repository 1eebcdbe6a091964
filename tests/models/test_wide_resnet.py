"""Tests for the Wide ResNet family."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification.models import registry
from image_classification.models import wide_resnet


def _num_params(model, shape):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), is_training=False))
  assert set(variables) == {'params'}
  return sum(x.size for x in jax.tree.leaves(variables))


def _tiny(**kwargs):
  return registry.build('wide_resnet', 10, depth=10, width=1, **kwargs)


def _random_params(model, shape, seed=0):
  """Random parameters of the right shapes, without compiling ``model.init``.

  Every leaf is random (zero-initialised gains included), so nothing hides.
  """
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), is_training=False))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = path[-1].key
    if name == 'kernel':
      std = 1.0 / np.sqrt(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0.0, std, s.shape), jnp.float32)
    offset = 1.0 if name in ('gain', 'scale') else 0.0
    return jnp.asarray(offset + rng.normal(0.0, 0.2, s.shape), jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes['params'])


def _images(n, seed=1, size=8):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 3)),
                     jnp.float32)


@pytest.fixture(scope='module')
def tiny_apply():
  """(model, params, jitted apply) for a WRN-10-1 with every parameter random."""
  model = _tiny()
  params = _random_params(model, (1, 8, 8, 3))
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, is_training=True))
  return model, params, apply


def test_registered():
  assert 'wide_resnet' in registry.available()


def test_wrn_16_4_matches_the_peer_benchmark_exactly():
  model = registry.build('wide_resnet', 10, depth=16, width=4)
  assert _num_params(model, (1, 32, 32, 3)) == 2_748_890


@pytest.mark.parametrize('depth,width,published', [
    (16, 4, 2.75e6), (40, 4, 8.9e6), (28, 10, 36.5e6)])
def test_parameter_counts_match_the_literature(depth, width, published):
  model = registry.build('wide_resnet', 10, depth=depth, width=width)
  assert _num_params(model, (1, 32, 32, 3)) == pytest.approx(published, rel=0.02)


def test_parameter_count_does_not_depend_on_weight_standardization():
  ws = registry.build('wide_resnet', 10, depth=16, width=4)
  plain = registry.build('wide_resnet', 10, depth=16, width=4,
                         weight_standardization=False)
  assert _num_params(ws, (1, 32, 32, 3)) == _num_params(plain, (1, 32, 32, 3))


@pytest.mark.parametrize('kwargs', [
    {}, {'normalization': 'none', 'skip_init': True},
    {'weight_standardization': False, 'activation': 'gelu'}])
def test_forward_shape_only_params_and_head(kwargs):
  model = _tiny(**kwargs)
  x = jnp.ones((2, 8, 8, 3))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, is_training=False))
  assert set(variables) == {'params'}
  assert variables['params']['head']['kernel'].shape == (64, 10)
  for is_training in (True, False):
    logits = jax.eval_shape(
        lambda v, t=is_training: model.apply(v, x, is_training=t), variables)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


def test_batch_norm_is_refused():
  with pytest.raises(ValueError, match='BatchNorm mixes examples.*group_norm'):
    registry.build('wide_resnet', 10, normalization='batch_norm')


@pytest.mark.parametrize('kwargs,match', [
    ({'depth': 17}, 'depth'), ({'activation': 'nope'}, 'activation'),
    ({'no_such_field': 1}, 'do not fit')])
def test_bad_kwargs_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    registry.build('wide_resnet', 10, **kwargs)


def test_examples_are_independent_and_vmap_agrees(tiny_apply):
  _, params, apply = tiny_apply
  x = _images(3)
  logits = apply(params, x)
  assert float(jnp.std(logits)) > 0
  other = x.at[1:].set(5.0 * _images(2, seed=2))
  np.testing.assert_allclose(apply(params, other)[0], logits[0], rtol=1e-5,
                             atol=1e-5)
  # One example at a time under vmap, as per-example gradients run it.
  per_example = jax.jit(jax.vmap(lambda xi: apply(params, xi[None])[0]))(x)
  np.testing.assert_allclose(per_example, logits, rtol=1e-4, atol=1e-5)


def test_ws_makes_the_model_invariant_to_conv_kernel_scale(tiny_apply):
  _, params, apply = tiny_apply
  x = _images(3)
  scaled = dict(params)
  scaled['stem_conv'] = {'kernel': params['stem_conv']['kernel'] * 7.0 + 0.1}
  np.testing.assert_allclose(apply(scaled, x), apply(params, x), rtol=1e-4,
                             atol=1e-4)


def test_skip_init_model_at_init_depends_only_on_skip_paths():
  model = _tiny(skip_init=True)
  x = _images(2)
  params = jax.jit(model.init)(jax.random.key(0, impl='rbg'), x)['params']
  assert all(params[f'group{g}_block0']['skip_gain']['gain'] == 0.0
             for g in range(3))
  # Replace every residual-branch weight; the zero skip gains hide them.
  changed = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 1.0 if any(
          getattr(k, 'key', None) in ('conv1', 'conv2', 'norm2') for k in path)
      else v, params)
  apply = jax.jit(lambda p: model.apply({'params': p}, x, is_training=True))
  np.testing.assert_allclose(apply(changed), apply(params), rtol=1e-6,
                             atol=1e-6)


def test_block_uses_identity_shortcut_when_shape_is_kept(tiny_apply):
  _, params, _ = tiny_apply
  assert 'shortcut_conv' not in params['group0_block0']  # 16 -> 16, stride 1.
  assert 'shortcut_conv' in params['group1_block0']
  assert isinstance(_tiny(), wide_resnet.WideResNet)

"""Tests for the normaliser-free families: NF-ResNet and NFNet."""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification.models import nfnet
from image_classification.models import registry

# Small but structurally complete models for forward tests.
_TINY = {
    'nf_resnet': dict(depth=26, width=0.125),
    'nfnet': dict(variant='F0', width=0.125, group_width=16),
}


def _num_params(model, shape):
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(shape), is_training=False))
  assert set(variables) == {'params'}
  return sum(x.size for x in jax.tree.leaves(variables))


def _random_params(model, shape, seed=0):
  """Random parameters of the right shapes, without compiling ``model.init``.

  Every leaf is random (the zero-initialised head and skip gains included), so
  nothing hides the body.
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


def _images(n, seed=1, size=32):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 3)),
                     jnp.float32)


@pytest.fixture(scope='module', params=sorted(_TINY))
def tiny(request):
  """(name, model, random params, jitted train-mode apply) for a tiny model."""
  model = registry.build(request.param, 5, **_TINY[request.param])
  params = _random_params(model, (1, 32, 32, 3))
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, is_training=True))
  return request.param, model, params, apply


def test_registered():
  assert {'nf_resnet', 'nfnet'} <= set(registry.available())


@pytest.mark.parametrize('name,kwargs,published', [
    ('nf_resnet', dict(depth=50), 25.5e6),
    ('nf_resnet', dict(depth=101), 44.5e6),
    ('nfnet', dict(variant='F0'), 71.5e6),
    ('nfnet', dict(variant='F1'), 132.6e6),
    ('nfnet', dict(variant='F2'), 193.8e6),
    ('nfnet', dict(variant='F3'), 254.9e6),
])
def test_parameter_counts_match_the_literature(name, kwargs, published):
  model = registry.build(name, 1000, **kwargs)
  size = nfnet.IMAGE_SIZES['F0']['train'] if name == 'nfnet' else 224
  assert _num_params(model, (1, size, size, 3)) == pytest.approx(
      published, rel=0.02)


def test_nfnet_image_sizes():
  assert nfnet.IMAGE_SIZES['F0'] == {'train': 192, 'eval': 256}
  assert nfnet.IMAGE_SIZES['F3'] == {'train': 320, 'eval': 416}


@pytest.mark.parametrize('name', sorted(_TINY))
def test_forward_shape_only_params_and_head(name):
  model = registry.build(name, 7, **_TINY[name])
  x = jnp.ones((2, 32, 32, 3))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, is_training=False))
  assert set(variables) == {'params'}
  assert variables['params']['head']['kernel'].shape[-1] == 7
  for is_training in (True, False):  # No rng needed: randomness is off by default.
    logits = jax.eval_shape(
        lambda v, t=is_training: model.apply(v, x, is_training=t), variables)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32


def test_examples_are_independent_and_vmap_agrees(tiny):
  _, _, params, apply = tiny
  x = _images(3)
  logits = apply(params, x)
  assert float(jnp.std(logits)) > 0
  other = x.at[1:].set(5.0 * _images(2, seed=2))
  np.testing.assert_allclose(apply(params, other)[0], logits[0], rtol=1e-5,
                             atol=1e-5)
  # One example at a time under vmap, as per-example gradients run it.
  per_example = jax.jit(jax.vmap(lambda xi: apply(params, xi[None])[0]))(x)
  np.testing.assert_allclose(per_example, logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', sorted(_TINY))
def test_batch_norm_is_refused(name):
  with pytest.raises(ValueError, match='BatchNorm mixes examples'):
    registry.build(name, 10, normalization='batch_norm')


def test_bad_kwargs_are_refused():
  with pytest.raises(ValueError, match='variant'):
    registry.build('nfnet', 10, variant='F9')
  with pytest.raises(ValueError, match='depth'):
    registry.build('nf_resnet', 10, depth=34)


def test_stochastic_depth_uses_dropout_rng_and_only_at_train_time():
  kwargs = dict(_TINY['nfnet'], stochastic_depth_rate=0.5)
  model = registry.build('nfnet', 5, **kwargs)
  x = _images(2)
  params = _random_params(model, (1, 32, 32, 3))
  with pytest.raises(Exception, match='dropout'):
    jax.eval_shape(lambda: model.apply({'params': params}, x, is_training=True))

  @jax.jit
  def run(key):
    eval_logits = model.apply({'params': params}, x, is_training=False)
    train_logits = model.apply({'params': params}, x, is_training=True,
                               rngs={'dropout': key})
    return eval_logits, train_logits

  # 11 of the 12 blocks drop with rates 0.5 * i / 12: some example loses one.
  eval_logits, train_logits = run(jax.random.key(0, impl='rbg'))
  assert not np.allclose(train_logits, eval_logits)


def test_nf_block_is_its_shortcut_when_skip_gain_is_zero(tiny):
  name, _, params, apply = tiny
  x = _images(3)  # Same shape as in the test above: no recompilation.
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if path[-2].key == 'skip_gain' else v,
      params)
  # Any residual-branch weight is hidden by the zero skip gains.
  changed = jax.tree_util.tree_map_with_path(
      lambda path, v: v * 3.0 + 1.0 if any(
          getattr(k, 'key', None) in ('conv0', 'conv1', 'conv2', 'se')
          for k in path) else v, zeroed)
  np.testing.assert_allclose(apply(changed, x), apply(zeroed, x), rtol=1e-5,
                             atol=1e-5)
  assert name in _TINY


# sha256 of the sorted 'path:shape:dtype' lines of the parameter tree at 1000 classes,
# taken before the two families shared models/normalizer_free.py: pre-trained
# checkpoints hold these trees, so a refactoring must not change them.
_PARAM_TREES = {
    ('nf_resnet', (('depth', 50),)): (
        176, 'aef938edff6e'),
    ('nfnet', (('variant', 'F3'),)): (
        845, 'cc4b51988b1c'),
    ('nf_resnet', (('depth', 26), ('width', 0.125), ('se_ratio', 0.25))): (
        128, '05fea2613067'),
    ('nfnet', (('variant', 'F0'), ('width', 0.125), ('group_width', 16))): (
        233, 'e9cecd1fbd5a'),
}


@pytest.mark.parametrize('name,kwargs', sorted(_PARAM_TREES))
def test_parameter_tree_is_unchanged(name, kwargs):
  model = registry.build(name, 1000, **dict(kwargs))
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                         is_training=False))
  lines = sorted(f'{jax.tree_util.keystr(p)}:{tuple(s.shape)}:{s.dtype}'
                 for p, s in jax.tree_util.tree_leaves_with_path(shapes))
  count, digest = _PARAM_TREES[(name, kwargs)]
  assert len(lines) == count
  assert hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:12] == digest


def test_nfnet_variants_are_the_published_ones():
  assert sorted(nfnet.VARIANTS) == [f'F{n}' for n in range(8)]
  assert nfnet.VARIANTS['F0'] == dict(depths=(1, 2, 6, 3), train_image_size=192,
                                      eval_image_size=256, dropout_rate=0.2)
  assert nfnet.VARIANTS['F3']['depths'] == (4, 8, 24, 12)
  assert nfnet.VARIANTS['F7'] == dict(depths=(8, 16, 48, 24), train_image_size=480,
                                      eval_image_size=608, dropout_rate=0.5)
  assert [v['dropout_rate'] for v in nfnet.VARIANTS.values()] == [
      0.2, 0.3, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5]


def test_model_options_are_the_fields_of_each_family():
  """config.model.kwargs may set exactly these (the shared base adds none)."""
  assert registry.keyword_arguments('nf_resnet') == [
      'activation', 'alpha', 'depth', 'dropout_rate', 'se_ratio',
      'stochastic_depth_rate', 'width']
  assert registry.keyword_arguments('nfnet') == [
      'activation', 'alpha', 'dropout_rate', 'final_conv_mult', 'group_width',
      'se_ratio', 'stochastic_depth_rate', 'variant', 'width']
  assert registry.build('nfnet', 3).activation == 'gelu'
  assert registry.build('nfnet', 3).se_ratio == 0.5
  assert registry.build('nf_resnet', 3).activation == 'relu'
  assert registry.build('nf_resnet', 3).se_ratio == 0.0

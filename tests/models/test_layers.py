"""Tests for the shared layers: WS convs, scaled activations, SE, stochastic depth."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from image_classification.models import layers


def _normal(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _key(seed=0):
  return jax.random.key(seed, impl='rbg')  # Cheaper to compile than threefry.


def test_standardize_kernel_mean_zero_var_one_over_fan_in():
  kernel = 3.0 + 2.0 * _normal((3, 3, 8, 5))
  w = np.asarray(layers.standardize_kernel(kernel))
  fan_in = 3 * 3 * 8
  np.testing.assert_allclose(w.mean(axis=(0, 1, 2)), 0.0, atol=1e-6)
  np.testing.assert_allclose(w.var(axis=(0, 1, 2)) * fan_in, 1.0, rtol=1e-4)


def test_ws_conv_uses_the_standardised_kernel():
  x = _normal((2, 6, 6, 4), 1)
  conv = layers.WSConv(5, 3)
  params = conv.init(_key(2), x)['params']
  assert set(params) == {'kernel'}
  expected = jax.lax.conv_general_dilated(
      x, layers.standardize_kernel(params['kernel']), (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(conv.apply({'params': params}, x), expected,
                             rtol=1e-5, atol=1e-5)
  # Invariant to a per-filter affine change of the stored kernel.
  shifted = {'kernel': params['kernel'] * jnp.arange(1.0, 6.0) + 0.7}
  np.testing.assert_allclose(conv.apply({'params': shifted}, x), expected,
                             rtol=1e-4, atol=1e-4)


def test_ws_conv_preserves_unit_variance():
  x = _normal((8, 16, 16, 64), 3)
  conv = layers.WSConv(64, 3)
  y = conv.apply(conv.init(_key(4), x), x)
  assert abs(float(jnp.var(y)) - 1.0) < 0.1


def test_scaled_ws_conv_has_gain_and_bias_and_groups():
  x = jnp.ones((1, 5, 5, 8))
  conv = layers.ScaledWSConv(6, 3, feature_group_count=2)
  params = conv.init(_key(0), x)['params']
  assert params['kernel'].shape == (3, 3, 4, 6)
  assert params['gain'].shape == (6,) and params['bias'].shape == (6,)
  assert conv.apply({'params': params}, x).shape == (1, 5, 5, 6)


@pytest.mark.parametrize('name', sorted(layers.ACTIVATION_GAMMA))
def test_activation_gamma_gives_unit_variance(name):
  z = np.linspace(-12.0, 12.0, 200_001)
  density = np.exp(-z**2 / 2) / np.sqrt(2 * np.pi) * (z[1] - z[0])
  y = np.asarray(layers.get_activation(name, scaled=True)(jnp.asarray(z)),
                 np.float64)
  mean = np.sum(density * y)
  var = np.sum(density * y**2) - mean**2
  assert abs(var - 1.0) < 1e-4


def test_unknown_activation_and_batch_norm_are_refused():
  with pytest.raises(ValueError, match='activation'):
    layers.get_activation('nope')
  with pytest.raises(ValueError, match='BatchNorm mixes examples'):
    layers.check_normalization('batch_norm')
  with pytest.raises(ValueError, match='group_norm'):
    layers.check_normalization('layer_norm_typo')


def test_squeeze_excite_gates_in_unit_interval():
  x = _normal((2, 4, 4, 8), 0)
  se = layers.SqueezeExcite(8, 4)
  gates = se.apply(se.init(_key(1), x), x)
  assert gates.shape == (2, 1, 1, 8)
  assert bool(jnp.all((gates > 0) & (gates < 1)))


def test_stochastic_depth_is_off_at_eval_and_uses_dropout_rng():
  x = jnp.ones((64, 2, 2, 3))
  sd = layers.StochasticDepth(0.5)
  np.testing.assert_array_equal(sd.apply({}, x, is_training=False), x)
  y = sd.apply({}, x, is_training=True, rngs={'dropout': _key(0)})
  per_example = np.asarray(y[:, 0, 0, 0])
  assert set(np.unique(per_example)) <= {0.0, 2.0}
  assert 0 < np.sum(per_example == 0) < 64
  # Each example's branch is kept or dropped whole.
  np.testing.assert_array_equal(y, per_example[:, None, None, None] * x)


def test_skip_gain_starts_at_zero():
  x = jnp.ones((1, 3))
  gain = layers.SkipGain()
  variables = gain.init(_key(0), x)
  np.testing.assert_array_equal(gain.apply(variables, x), 0.0)

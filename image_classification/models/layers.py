"""Building blocks shared by the model families.

Every layer here acts on one example at a time: no statistic is ever taken over the
batch axis, so a model built from them keeps each example's logits (and so its
gradient) independent of the other examples in the batch, as per-example clipping in
DP-SGD requires. Weight standardisation normalises parameters, not activations, and
GroupNorm normalises over the channels and pixels of one example.
"""
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from image_classification.privacy.clipped_sums import layer_rules

Array = jax.Array
Padding = str | Sequence[tuple[int, int]]

# gamma = 1 / std(f(z)) for z ~ N(0, 1): multiplying f by gamma makes the activation
# variance preserving at initialisation (Brock et al. 2021, "Characterizing signal
# propagation to close the performance gap in unnormalized ResNets"). Computed by
# numerical integration against the standard normal density; tests/models/
# test_layers.py recomputes them.
ACTIVATION_GAMMA = {
    'identity': 1.0,
    'relu': 1.7128585504402856,
    'leaky_relu': 1.7048316271692128,
    'relu6': 1.7128585504402856,
    'elu': 1.2708434178732510,
    'celu': 1.2708434178732510,
    'selu': 1.0,
    'gelu': 1.7009165617202373,  # jax.nn.gelu's default tanh approximation.
    'silu': 1.7871872221296583,
    'swish': 1.7871872221296583,
    'tanh': 1.5925374197529762,
    'sigmoid': 4.8013133716070690,
    'softplus': 1.9191259800570537,
}

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'identity': lambda x: x,
    'relu': jax.nn.relu,
    'leaky_relu': jax.nn.leaky_relu,
    'relu6': jax.nn.relu6,
    'elu': jax.nn.elu,
    'celu': jax.nn.celu,
    'selu': jax.nn.selu,
    'gelu': jax.nn.gelu,
    'silu': jax.nn.silu,
    'swish': jax.nn.silu,
    'tanh': jnp.tanh,
    'sigmoid': jax.nn.sigmoid,
    'softplus': jax.nn.softplus,
}

NORMALIZATIONS = ('group_norm', 'none')


def get_activation(name: str, scaled: bool = False) -> Callable[[Array], Array]:
  """Returns the activation called ``name``; ``scaled`` multiplies it by its gamma."""
  if name not in _ACTIVATIONS:
    raise ValueError(
        f'activation={name!r} is not known; choose one of {sorted(_ACTIVATIONS)}')
  fn = _ACTIVATIONS[name]
  if not scaled:
    return fn
  gamma = ACTIVATION_GAMMA[name]
  return lambda x: fn(x) * gamma


def check_normalization(normalization: str) -> None:
  """Refuses normalisers that compute statistics across the examples of a batch."""
  if normalization in ('batch_norm', 'batchnorm', 'bn', 'sync_batch_norm'):
    raise ValueError(
        f'normalization={normalization!r} is refused: BatchNorm mixes examples (its '
        'mean and variance are taken over the batch), which breaks the per-example '
        'sensitivity that DP-SGD relies on. Use normalization=\'group_norm\' or a '
        "normaliser-free model ('nf_resnet', 'nfnet').")
  if normalization not in NORMALIZATIONS:
    raise ValueError(
        f'normalization={normalization!r} is not known; choose one of '
        f'{list(NORMALIZATIONS)}')


def check_normalizer_free(normalization: str) -> None:
  """For NF models: accepts only 'none'; BatchNorm gets the DP explanation."""
  check_normalization(normalization)
  if normalization != 'none':
    raise ValueError(
        f'normalization={normalization!r}: normaliser-free models have no '
        "normalisation layers; leave it unset or pass 'none'")


def standardize_kernel(kernel: Array, eps: float = 1e-4) -> Array:
  """Scaled weight standardisation of a conv kernel [kh, kw, in / groups, out].

  Each output filter is shifted to mean 0 and scaled to variance 1 / fan_in over its
  fan_in = kh * kw * in / groups weights, so that a unit-variance input gives a
  unit-variance output. ``eps`` bounds the scale for (near-)constant filters.
  """
  fan_in = np.prod(kernel.shape[:-1])
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) * jax.lax.rsqrt(jnp.maximum(var * fan_in, eps))


def ws_kernel(kernel: Array, gain: Array | None = None, eps: float = 1e-4) -> Array:
  """The kernel a ``WSConv`` convolves with: ``standardize_kernel(kernel, eps)``,
  times the per-filter ``gain`` when given. The one definition of that map: the fast
  per-example gradient rule registered below for ``WSConv`` differentiates it."""
  kernel = standardize_kernel(kernel, eps)
  return kernel if gain is None else kernel * gain


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class WSConv(nn.Module):
  """2D convolution (NHWC) with a weight-standardised kernel.

  The stored ``kernel`` is free; the convolution uses ``standardize_kernel(kernel)``
  (per output filter: mean 0, variance 1 / fan_in). With ``use_gain`` a learnable
  per-filter gain (init 1) multiplies the standardised kernel, as in the scaled WS
  convolutions of NF-ResNets and NFNets.

  ``dtype`` is the computation dtype (e.g. ``jnp.bfloat16`` for mixed precision):
  the input and the standardised kernel are cast to it for the convolution, while
  the parameters and the standardisation itself stay float32. None: the input's.
  """
  features: int
  kernel_size: int | Sequence[int] = 3
  strides: int | Sequence[int] = 1
  padding: Padding = 'SAME'
  feature_group_count: int = 1
  use_bias: bool = False
  use_gain: bool = False
  eps: float = 1e-4
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = None

  def standardized_kernel(self, in_features: int) -> Array:
    """Creates (or fetches) the kernel and returns the standardised one."""
    if in_features % self.feature_group_count:
      raise ValueError(f'{in_features} input channels do not split into '
                       f'{self.feature_group_count} groups')
    shape = _pair(self.kernel_size) + (
        in_features // self.feature_group_count, self.features)
    kernel = self.param('kernel', self.kernel_init, shape)
    gain = (self.param('gain', nn.initializers.ones, (self.features,))
            if self.use_gain else None)
    return ws_kernel(kernel, gain, self.eps)

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.dtype is not None:
      x = x.astype(self.dtype)
    kernel = self.standardized_kernel(x.shape[-1]).astype(x.dtype)
    padding = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding)
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=_pair(self.strides), padding=padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=self.feature_group_count)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,))
      y = y + bias.astype(y.dtype)
    return y


def _ws_conv_geometry(module: WSConv):
  return layer_rules.conv_geometry(_pair(module.kernel_size), module.strides,
                                   module.padding, groups=module.feature_group_count)


# The 'fast' and 'ghost' clipped sums' rule for WSConv (and ScaledWSConv): the conv's
# per-example gradient of the kernel it convolves with, mapped to 'kernel' and 'gain'
# through the VJP of ws_kernel, this module's own standardisation code.
layer_rules.register(WSConv, layer_rules.conv_rule(
    'ws_conv', _ws_conv_geometry, param_names=('kernel', 'gain', 'bias'),
    effective_kernel=lambda module, p: ws_kernel(p['kernel'], p.get('gain'),
                                                 module.eps)))


class ScaledWSConv(WSConv):
  """NF-style scaled WS conv (Brock et al. 2021): learnable gain and bias by default."""
  use_bias: bool = True
  use_gain: bool = True


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation gates computed from one example's own pooled features.

  Returns the gates in (0, 1), shape [batch, 1, 1, features]; the caller multiplies.
  ``dtype``: the Dense layers' computation dtype (None: promote from the input).
  """
  features: int
  hidden: int
  activation: Callable[[Array], Array] = jax.nn.relu
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = jnp.mean(x, axis=(1, 2))
    h = self.activation(nn.Dense(self.hidden, dtype=self.dtype, name='fc0')(h))
    h = nn.Dense(self.features, dtype=self.dtype, name='fc1')(h)
    return jax.nn.sigmoid(h)[:, None, None, :]


class StochasticDepth(nn.Module):
  """Drops a residual branch per example with probability ``rate`` at train time.

  Uses the 'dropout' rng. Each example draws its own mask from that key; under a
  per-example ``jax.vmap`` the caller must give each example its own key, otherwise
  all examples share one draw (still no cross-example leakage, but less noise).
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: Array, is_training: bool) -> Array:
    if not is_training or self.rate <= 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return x * mask.astype(x.dtype) / keep


class SkipGain(nn.Module):
  """A learnable scalar on a residual branch, zero-initialised by default (SkipInit)."""
  init_value: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    gain = self.param('gain', nn.initializers.constant(self.init_value), ())
    return x * gain.astype(x.dtype)

"""Models trained on fixed features (config.model.features, e.g. ScatterNet): the
linear model and the small CNN of Tramer & Boneh 2021 on scattering features.

Both start with an optional per-example GroupNorm of the features without scale or
bias (``num_groups``; 0 turns it off): each example is normalised with its own
statistics over groups of channels, so nothing is estimated from the private data and
nothing mixes examples (the "data-independent" normalisation of Tramer & Boneh, free of
privacy cost; their BatchNorm variant spends budget on DP statistics instead).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from image_classification.models import registry

_ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh}


def _normalise(x, num_groups: int, dtype):
  """Per-example GroupNorm over [H, W, channels of the group]; no parameters."""
  if not num_groups:
    return x
  if x.shape[-1] % num_groups:
    raise ValueError(f'num_groups={num_groups} does not divide the {x.shape[-1]} '
                     'feature channels (config.model.kwargs.num_groups)')
  return nn.GroupNorm(num_groups=num_groups, use_bias=False, use_scale=False,
                      epsilon=1e-5, dtype=dtype)(x)


class FeatureLinear(nn.Module):
  """GroupNorm (optional), flatten, one dense layer: a linear model of the features.

  ``zero_init``: the head starts at zero (every class equally likely), the usual start
  of a DP linear probe; False draws it as Flax does (LeCun normal)."""
  num_classes: int
  num_groups: int = 27
  zero_init: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, is_training: bool = False):
    del is_training
    x = _normalise(x.astype(self.dtype), self.num_groups, self.dtype)
    x = x.reshape(x.shape[:-3] + (-1,))
    init = {'kernel_init': nn.initializers.zeros} if self.zero_init else {}
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head', **init)(
        x).astype(jnp.float32)


class FeatureCNN(nn.Module):
  """GroupNorm (optional), 3x3 convolutions (the first with stride 2), flatten, a
  hidden dense layer and the head; tanh by default. With the default channels on 7x7
  ScatterNet features of 28x28 images this is the CNN Tramer & Boneh train on
  ScatterNet features of MNIST (4x4x32 before the dense layers)."""
  num_classes: int
  channels: Sequence[int] = (16, 32)
  hidden: int = 32
  num_groups: int = 27
  activation: str = 'tanh'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, is_training: bool = False):
    del is_training
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f'activation {self.activation!r} unknown; choose one of '
                       f'{sorted(_ACTIVATIONS)}')
    act = _ACTIVATIONS[self.activation]
    x = _normalise(x.astype(self.dtype), self.num_groups, self.dtype)
    for i, c in enumerate(self.channels):
      x = act(nn.Conv(c, (3, 3), strides=(2, 2) if i == 0 else (1, 1),
                      padding=((1, 1), (1, 1)), dtype=self.dtype, name=f'conv{i}')(x))
    x = x.reshape(x.shape[:-3] + (-1,))
    if self.hidden:
      x = act(nn.Dense(self.hidden, dtype=self.dtype, name='hidden')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(
        jnp.float32)


@registry.register('feature_linear')
def feature_linear(num_classes: int, **kwargs) -> nn.Module:
  return FeatureLinear(num_classes=num_classes, **kwargs)


@registry.register('feature_cnn')
def feature_cnn(num_classes: int, **kwargs) -> nn.Module:
  return FeatureCNN(num_classes=num_classes, **kwargs)

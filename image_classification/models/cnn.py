"""Small convolutional networks for small images (8x8 digits, 28x28 MNIST-family).

No normalisation layers at all: nothing mixes examples, so per-example gradients are
exactly the gradients of each example's own loss.
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from image_classification.models import registry

_ACTIVATIONS = {'relu': nn.relu, 'tanh': jnp.tanh, 'elu': nn.elu, 'gelu': nn.gelu}


def _activation(name: str):
  if name not in _ACTIVATIONS:
    raise ValueError(f'activation {name!r} unknown; choose one of {sorted(_ACTIVATIONS)}')
  return _ACTIVATIONS[name]


class SmallCNN(nn.Module):
  """3x3 convolutions with 2x2 average pooling between them, then either global
  average pooling or (flatten=True, better for tiny images where position matters) a
  flattened feature map, an optional hidden layer and the head.

  ``dtype`` is the computation dtype (config.training.compute_dtype): layers and
  activations run in it, parameters stay float32, the logits are float32."""
  num_classes: int
  channels: Sequence[int] = (32, 64)
  hidden: int = 0
  activation: str = 'tanh'
  flatten: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, is_training: bool = False):
    del is_training
    act = _activation(self.activation)
    x = x.astype(self.dtype)
    for i, c in enumerate(self.channels):
      x = act(nn.Conv(c, (3, 3), padding='SAME', dtype=self.dtype, name=f'conv{i}')(x))
      if i < len(self.channels) - 1:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[:-3] + (-1,)) if self.flatten else x.mean(axis=(-3, -2))
    if self.hidden:
      x = act(nn.Dense(self.hidden, dtype=self.dtype, name='hidden')(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(
        jnp.float32)


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class TanhCNN(nn.Module):
  """The end-to-end CNN of Papernot et al. 2021 / Tramer & Boneh 2021 for 28x28 inputs:
  conv 16@8x8 stride 2, max-pool 2 stride 1, conv 32@4x4 stride 2, max-pool 2 stride 1,
  dense 32, dense num_classes, tanh activations (about 26k parameters).

  init_scheme='torch' (the default) initialises as their PyTorch code did: weights
  and biases uniform in +-1/sqrt(fan_in). 'lecun' is Flax's default (LeCun normal
  weights, sqrt(3) larger; zero biases): 0.9782 vs 0.9806 on MNIST at epsilon 3
  (results/mnist_eps3.md). ``dtype``: the computation dtype, as in SmallCNN."""
  num_classes: int
  activation: str = 'tanh'
  init_scheme: str = 'torch'
  dtype: Any = jnp.float32

  def _layer_kwargs(self, fan_in: int):
    if self.init_scheme == 'lecun':
      return {'dtype': self.dtype}
    if self.init_scheme == 'torch':
      bound = 1.0 / math.sqrt(fan_in)
      return {'kernel_init': _uniform(bound), 'bias_init': _uniform(bound),
              'dtype': self.dtype}
    raise ValueError(f"TanhCNN init_scheme {self.init_scheme!r} unknown; choose 'torch' "
                     "or 'lecun' (config.model.kwargs.init_scheme)")

  @nn.compact
  def __call__(self, x, is_training: bool = False):
    del is_training
    act = _activation(self.activation)
    x = x.astype(self.dtype)
    x = nn.Conv(16, (8, 8), strides=(2, 2), padding=((3, 3), (3, 3)), name='conv0',
                **self._layer_kwargs(8 * 8 * x.shape[-1]))(x)
    x = nn.max_pool(act(x), (2, 2), strides=(1, 1))
    x = nn.Conv(32, (4, 4), strides=(2, 2), padding='VALID', name='conv1',
                **self._layer_kwargs(4 * 4 * x.shape[-1]))(x)
    x = nn.max_pool(act(x), (2, 2), strides=(1, 1))
    x = x.reshape(x.shape[:-3] + (-1,))
    x = act(nn.Dense(32, name='hidden', **self._layer_kwargs(x.shape[-1]))(x))
    logits = nn.Dense(self.num_classes, name='head',
                      **self._layer_kwargs(x.shape[-1]))(x)
    return logits.astype(jnp.float32)


@registry.register('cnn')
def small_cnn(num_classes: int, **kwargs) -> nn.Module:
  return SmallCNN(num_classes=num_classes, **kwargs)


@registry.register('tanh_cnn')
def tanh_cnn(num_classes: int, **kwargs) -> nn.Module:
  return TanhCNN(num_classes=num_classes, **kwargs)


class _BatchNormCNN(nn.Module):
  """Exists only so that tests can check that BatchNorm is refused in a DP run."""
  num_classes: int

  @nn.compact
  def __call__(self, x, is_training: bool = False):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not is_training)(x)
    return nn.Dense(self.num_classes, name='head')(x.mean(axis=(1, 2)))

"""Normalizer-free ResNets (Brock et al. 2021a), the ImageNet models of De et al. 2022.

A ResNet-v2 bottleneck network with no normalisation layer at all: scaled
weight-standardised convs, scaled activations, and residual blocks of the form
``x + alpha * skip_gain * f(act(x) / beta)``, where beta is the analytically
expected std of x and skip_gain starts at 0. Nothing is computed across examples,
so the model is safe for per-example gradient clipping. NF-ResNet-50 has about 25.5M
parameters at 1000 classes.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from image_classification.models import layers
from image_classification.models import registry

# Blocks per stage for each depth (bottleneck blocks, 3 convs each).
STAGE_DEPTHS = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
_STAGE_WIDTHS = (256, 512, 1024, 2048)


class NFResNetBlock(nn.Module):
  """NF bottleneck block: 1x1 -> 3x3 (strided) -> 1x1, optional SE, skip gain."""
  features: int
  strides: int = 1
  beta: float = 1.0
  alpha: float = 0.2
  bottleneck_ratio: float = 0.25
  activation: str = 'relu'
  se_ratio: float = 0.0
  stochastic_depth_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    act = layers.get_activation(self.activation, scaled=True)
    conv = functools.partial(layers.ScaledWSConv, dtype=self.dtype)
    width = int(self.features * self.bottleneck_ratio)
    out = act(x) * self.beta
    shortcut = x
    if self.strides > 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, strides=self.strides,
                      name='shortcut_conv')(out)
    out = conv(width, 1, name='conv0')(out)
    out = conv(width, 3, strides=self.strides, name='conv1')(act(out))
    out = conv(self.features, 1, name='conv2')(act(out))
    if self.se_ratio > 0:
      hidden = max(1, int(self.features * self.se_ratio))
      out = 2.0 * layers.SqueezeExcite(self.features, hidden, dtype=self.dtype,
                                         name='se')(out) * out
    out = layers.StochasticDepth(self.stochastic_depth_rate)(out, is_training)
    out = layers.SkipGain(name='skip_gain')(out)
    return out * self.alpha + shortcut


class NFResNet(nn.Module):
  """NF-ResNet-{26,50,101,152,200}; ``width`` multiplies every channel count."""
  num_classes: int
  depth: int = 50
  width: float = 1.0
  alpha: float = 0.2
  activation: str = 'relu'
  se_ratio: float = 0.0
  stochastic_depth_rate: float = 0.0
  dropout_rate: float = 0.0
  # The computation dtype (config.training.compute_dtype): convolutions and
  # activations run in it; parameters and the weight standardisation stay float32;
  # the logits are float32.
  dtype: Any = jnp.float32

  def validate(self) -> None:
    """Raises ValueError naming a bad field."""
    if self.depth not in STAGE_DEPTHS:
      raise ValueError(f'nf_resnet depth={self.depth} is not supported; choose one '
                       f'of {sorted(STAGE_DEPTHS)}')
    if self.width <= 0:
      raise ValueError(f'nf_resnet width={self.width} must be > 0')
    layers.get_activation(self.activation, scaled=True)

  @nn.compact
  def __call__(self, images: jax.Array, is_training: bool = False) -> jax.Array:
    self.validate()
    act = layers.get_activation(self.activation, scaled=True)
    conv = functools.partial(layers.ScaledWSConv, dtype=self.dtype)
    x = conv(int(64 * self.width), 7, strides=2, use_bias=False,
             name='stem_conv')(images.astype(self.dtype))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')

    depths = STAGE_DEPTHS[self.depth]
    num_blocks = sum(depths)
    expected_std = 1.0
    index = 0
    for stage, (width, depth, stride) in enumerate(
        zip(_STAGE_WIDTHS, depths, (1, 2, 2, 2))):
      for b in range(depth):
        x = NFResNetBlock(
            features=int(width * self.width), strides=stride if b == 0 else 1,
            beta=1.0 / expected_std, alpha=self.alpha, activation=self.activation,
            se_ratio=self.se_ratio,
            stochastic_depth_rate=self.stochastic_depth_rate * index / num_blocks,
            dtype=self.dtype,
            name=f'stage{stage}_block{b}')(x, is_training)
        index += 1
        # The first block's projection shortcut resets the variance to ~1.
        expected_std = 1.0 if b == 0 else expected_std
        expected_std = (expected_std**2 + self.alpha**2) ** 0.5

    x = jnp.mean(act(x), axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not is_training)(x)
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      dtype=self.dtype, name='head')(x)
    return logits.astype(jnp.float32)


@registry.register('nf_resnet')
def nf_resnet(num_classes: int, normalization: str = 'none',
              **kwargs) -> NFResNet:
  """NF-ResNet factory.

  Args:
    num_classes: size of the ``head`` layer.
    normalization: only 'none' (there is no normalisation layer); 'batch_norm' is
      refused with the DP explanation.
    **kwargs: NFResNet fields: depth, width, alpha, activation, se_ratio,
      stochastic_depth_rate and dropout_rate (both 0 by default; 'dropout' rng).
  """
  layers.check_normalizer_free(normalization)  # Refuses 'batch_norm'.
  model = NFResNet(num_classes=num_classes, **kwargs)
  model.validate()
  return model

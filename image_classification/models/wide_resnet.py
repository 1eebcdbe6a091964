"""Wide ResNets (Zagoruyko & Komodakis 2016) as used for DP-SGD by De et al. 2022.

WRN-depth-width: a 3x3 stem conv to 16 channels, three groups of (depth - 4) / 6
pre-activation basic blocks with 16*width, 32*width and 64*width channels (strides 1,
2, 2), a final norm + activation, global average pooling and the ``head`` Dense layer.
Convs have no bias. For DP the normaliser is GroupNorm (statistics of one example
only) and the convs are weight-standardised; BatchNorm is refused. WRN-16-4 has
2,748,890 parameters at 10 classes, the same layers as the peer benchmark.
"""
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from image_classification.models import layers
from image_classification.models import registry

_PAD1 = ((1, 1), (1, 1))  # Symmetric padding 1 for 3x3 convs, also at stride 2.


def _norm_factory(normalization: str, groups: int,
                  dtype: Any = None) -> Callable[..., Callable]:
  """Returns ``make(name) -> norm``; 'none' gives the identity. GroupNorm's
  statistics are float32 whatever ``dtype`` (its output dtype)."""
  layers.check_normalization(normalization)
  if normalization == 'group_norm':
    return functools.partial(nn.GroupNorm, num_groups=groups, epsilon=1e-5,
                             dtype=dtype)
  return lambda name=None: (lambda x: x)


class WideResNetBlock(nn.Module):
  """Pre-activation basic block: norm-act-conv3x3-norm-act-conv3x3 plus shortcut.

  The shortcut is the input itself, or a strided 1x1 conv of the normalised and
  activated input when the shape changes. With ``skip_init`` a zero-initialised
  scalar multiplies the residual branch, so at init the block is its shortcut.
  """
  features: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., Callable]
  activation: Callable[[jax.Array], jax.Array]
  skip_init: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out = self.activation(self.norm(name='norm1')(x))
    if x.shape[-1] != self.features or self.strides != 1:
      shortcut = self.conv(self.features, kernel_size=(1, 1), strides=self.strides,
                           padding='VALID', name='shortcut_conv')(out)
    else:
      shortcut = x
    out = self.conv(self.features, kernel_size=(3, 3), strides=self.strides,
                    padding=_PAD1, name='conv1')(out)
    out = self.activation(self.norm(name='norm2')(out))
    out = self.conv(self.features, kernel_size=(3, 3), strides=1, padding=_PAD1,
                    name='conv2')(out)
    if self.skip_init:
      out = layers.SkipGain(name='skip_gain')(out)
    return out + shortcut


class WideResNet(nn.Module):
  """WRN-depth-width for small images; returns logits [batch, num_classes].

  ``dtype`` is the computation dtype (config.training.compute_dtype): convolutions,
  norms' outputs and activations run in it; parameters (and the weight
  standardisation, GroupNorm's statistics) stay float32; the logits are float32.
  """
  num_classes: int
  depth: int = 16
  width: int = 4
  normalization: str = 'group_norm'
  groups: int = 16
  weight_standardization: bool = True
  skip_init: bool = False
  activation: str = 'relu'
  dtype: Any = jnp.float32

  def validate(self) -> None:
    """Raises ValueError naming a bad field."""
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'WideResNet depth={self.depth} must satisfy '
                       '(depth - 4) % 6 == 0, e.g. 16, 22, 28, 40')
    if self.width < 1:
      raise ValueError(f'WideResNet width={self.width} must be >= 1')
    layers.check_normalization(self.normalization)
    layers.get_activation(self.activation)

  @nn.compact
  def __call__(self, images: jax.Array, is_training: bool = False) -> jax.Array:
    del is_training  # Deterministic model: same function at train and eval time.
    self.validate()
    if self.weight_standardization:
      conv = functools.partial(layers.WSConv, use_bias=False, dtype=self.dtype)
    else:
      conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = _norm_factory(self.normalization, self.groups, self.dtype)
    activation = layers.get_activation(self.activation)
    blocks_per_group = (self.depth - 4) // 6

    x = conv(16, kernel_size=(3, 3), strides=1, padding=_PAD1, name='stem_conv')(
        images.astype(self.dtype))
    for g, (mult, strides) in enumerate(((16, 1), (32, 2), (64, 2))):
      for b in range(blocks_per_group):
        x = WideResNetBlock(
            features=mult * self.width, strides=strides if b == 0 else 1,
            conv=conv, norm=norm, activation=activation, skip_init=self.skip_init,
            name=f'group{g}_block{b}')(x)
    x = activation(norm(name='final_norm')(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x).astype(
        jnp.float32)


@registry.register('wide_resnet')
def wide_resnet(num_classes: int, **kwargs) -> WideResNet:
  """WRN factory.

  Args:
    num_classes: size of the ``head`` layer.
    **kwargs: WideResNet fields: depth, width, normalization ('group_norm' or
      'none'; 'batch_norm' is refused), groups, weight_standardization, skip_init,
      activation.
  """
  model = WideResNet(num_classes=num_classes, **kwargs)
  model.validate()  # A bad config fails here, before anything compiles.
  return model

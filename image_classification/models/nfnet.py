"""NFNets (Brock et al. 2021b), normaliser-free networks used by De et al. 2022.

F-variants differ only in depth: stage widths (256, 512, 1536, 1536), blocks per
stage (1, 2, 6, 3) * N for FN-1. Each block is a bottleneck with grouped 3x3 convs
(group width 128), squeeze-excite and a zero-initialised skip gain; the stem is four
3x3 convs, the head a 1x1 conv to 3072 channels, average pooling and ``head``. No
statistic is taken across examples. Stochastic depth and dropout are off by default
and, when on, draw from the 'dropout' rng. Parameter counts at 1000 classes: F0
71.5M, F1 132.6M, F2 193.8M, F3 254.9M.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from image_classification.models import layers
from image_classification.models import registry

# Per variant: blocks per stage, train / eval image sizes and the published dropout
# rate before the head (not applied unless dropout_rate is passed).
VARIANTS = {
    'F0': dict(depths=(1, 2, 6, 3), train_image_size=192, eval_image_size=256,
               dropout_rate=0.2),
    'F1': dict(depths=(2, 4, 12, 6), train_image_size=224, eval_image_size=320,
               dropout_rate=0.3),
    'F2': dict(depths=(3, 6, 18, 9), train_image_size=256, eval_image_size=352,
               dropout_rate=0.4),
    'F3': dict(depths=(4, 8, 24, 12), train_image_size=320, eval_image_size=416,
               dropout_rate=0.4),
    'F4': dict(depths=(5, 10, 30, 15), train_image_size=384, eval_image_size=512,
               dropout_rate=0.5),
    'F5': dict(depths=(6, 12, 36, 18), train_image_size=416, eval_image_size=544,
               dropout_rate=0.5),
    'F6': dict(depths=(7, 14, 42, 21), train_image_size=448, eval_image_size=576,
               dropout_rate=0.5),
    'F7': dict(depths=(8, 16, 48, 24), train_image_size=480, eval_image_size=608,
               dropout_rate=0.5),
}
# {'F0': {'train': 192, 'eval': 256}, ...}, for configs.
IMAGE_SIZES = {
    name: {'train': v['train_image_size'], 'eval': v['eval_image_size']}
    for name, v in VARIANTS.items()
}
_STAGE_WIDTHS = (256, 512, 1536, 1536)


class NFNetBlock(nn.Module):
  """NFNet bottleneck: 1x1 -> grouped 3x3 (strided) -> grouped 3x3 -> 1x1 -> SE.

  Output ``shortcut + alpha * skip_gain * f(act(x) * beta)``; the shortcut of a
  block that changes shape is avg-pool (if strided) then a 1x1 conv.
  """
  features: int
  strides: int = 1
  beta: float = 1.0
  alpha: float = 0.2
  expansion: float = 0.5
  group_width: int = 128
  se_ratio: float = 0.5
  activation: str = 'gelu'
  stochastic_depth_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    act = layers.get_activation(self.activation, scaled=True)
    conv = functools.partial(layers.ScaledWSConv, dtype=self.dtype)
    groups = max(1, int(self.features * self.expansion) // self.group_width)
    width = groups * self.group_width
    out = act(x) * self.beta
    shortcut = x
    if self.strides > 1 or x.shape[-1] != self.features:
      shortcut = out
      if self.strides > 1:
        shortcut = nn.avg_pool(shortcut, (2, 2), strides=(2, 2), padding='SAME')
      shortcut = conv(self.features, 1, name='shortcut_conv')(shortcut)
    out = conv(width, 1, name='conv0')(out)
    out = conv(width, 3, strides=self.strides, feature_group_count=groups,
               name='conv1')(act(out))
    out = conv(width, 3, feature_group_count=groups, name='conv1b')(act(out))
    out = conv(self.features, 1, name='conv2')(act(out))
    if self.se_ratio > 0:
      hidden = max(1, int(self.features * self.se_ratio))
      out = 2.0 * layers.SqueezeExcite(self.features, hidden, dtype=self.dtype,
                                         name='se')(out) * out
    out = layers.StochasticDepth(self.stochastic_depth_rate)(out, is_training)
    out = layers.SkipGain(name='skip_gain')(out)
    return out * self.alpha + shortcut


class NFNet(nn.Module):
  """NFNet-F0..F7; ``width`` multiplies the stage widths."""
  num_classes: int
  variant: str = 'F0'
  width: float = 1.0
  alpha: float = 0.2
  se_ratio: float = 0.5
  group_width: int = 128
  activation: str = 'gelu'
  stochastic_depth_rate: float = 0.0
  dropout_rate: float = 0.0
  final_conv_mult: float = 2.0
  # The computation dtype (config.training.compute_dtype): convolutions and
  # activations run in it; parameters and the weight standardisation stay float32;
  # the logits are float32.
  dtype: Any = jnp.float32

  def validate(self) -> None:
    """Raises ValueError naming a bad field."""
    if self.variant not in VARIANTS:
      raise ValueError(f'nfnet variant={self.variant!r} is not known; choose one '
                       f'of {sorted(VARIANTS)}')
    if self.width <= 0:
      raise ValueError(f'nfnet width={self.width} must be > 0')
    layers.get_activation(self.activation, scaled=True)

  @nn.compact
  def __call__(self, images: jax.Array, is_training: bool = False) -> jax.Array:
    self.validate()
    act = layers.get_activation(self.activation, scaled=True)
    stage_widths = [int(w * self.width) for w in _STAGE_WIDTHS]

    conv = functools.partial(layers.ScaledWSConv, dtype=self.dtype)
    x = conv(16, 3, strides=2, name='stem_conv0')(images.astype(self.dtype))
    x = conv(32, 3, name='stem_conv1')(act(x))
    x = conv(64, 3, name='stem_conv2')(act(x))
    x = conv(stage_widths[0] // 2, 3, strides=2, name='stem_conv3')(act(x))

    depths = VARIANTS[self.variant]['depths']
    num_blocks = sum(depths)
    expected_std = 1.0
    index = 0
    for stage, (width, depth, stride) in enumerate(
        zip(stage_widths, depths, (1, 2, 2, 2))):
      for b in range(depth):
        x = NFNetBlock(
            features=width, strides=stride if b == 0 else 1,
            beta=1.0 / expected_std, alpha=self.alpha,
            group_width=self.group_width, se_ratio=self.se_ratio,
            activation=self.activation,
            stochastic_depth_rate=self.stochastic_depth_rate * index / num_blocks,
            dtype=self.dtype,
            name=f'stage{stage}_block{b}')(x, is_training)
        index += 1
        # The first block's projection shortcut resets the variance to ~1.
        expected_std = 1.0 if b == 0 else expected_std
        expected_std = (expected_std**2 + self.alpha**2) ** 0.5

    x = conv(int(stage_widths[-1] * self.final_conv_mult), 1, name='final_conv')(x)
    x = jnp.mean(act(x), axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not is_training)(x)
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      dtype=self.dtype, name='head')(x)
    return logits.astype(jnp.float32)


@registry.register('nfnet')
def nfnet(num_classes: int, normalization: str = 'none', **kwargs) -> NFNet:
  """NFNet factory.

  Args:
    num_classes: size of the ``head`` layer.
    normalization: only 'none' (there is no normalisation layer); 'batch_norm' is
      refused with the DP explanation.
    **kwargs: NFNet fields: variant ('F0'..'F7'), width, alpha, se_ratio,
      group_width, activation, final_conv_mult, stochastic_depth_rate and
      dropout_rate (both 0 by default; 'dropout' rng).
  """
  layers.check_normalizer_free(normalization)  # Refuses 'batch_norm'.
  model = NFNet(num_classes=num_classes, **kwargs)
  model.validate()
  return model

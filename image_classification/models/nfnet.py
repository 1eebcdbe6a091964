"""NFNets (Brock et al. 2021b), normaliser-free networks used by De et al. 2022.

F-variants differ only in depth: stage widths (256, 512, 1536, 1536), blocks per
stage (1, 2, 6, 3) * N for FN-1. Each block is a bottleneck with grouped 3x3 convs
(group width 128), squeeze-excite and a zero-initialised skip gain; the stem is four
3x3 convs, the head a 1x1 conv to 3072 channels, average pooling and ``head``. No
statistic is taken across examples. Stochastic depth and dropout are off by default
and, when on, draw from the 'dropout' rng. Parameter counts at 1000 classes: F0
71.5M, F1 132.6M, F2 193.8M, F3 254.9M.
"""

import flax.linen as nn

from image_classification.models import layers
from image_classification.models import normalizer_free
from image_classification.models import registry

# FN: (train image size, eval image size, the published dropout rate before the head
# (not applied unless dropout_rate is passed)).
_PUBLISHED = ((192, 256, 0.2), (224, 320, 0.3), (256, 352, 0.4), (320, 416, 0.4),
              (384, 512, 0.5), (416, 544, 0.5), (448, 576, 0.5), (480, 608, 0.5))
# Per variant: blocks per stage ((1, 2, 6, 3) * (N + 1) for FN), train / eval image
# sizes and dropout rate.
VARIANTS = {
    f'F{n}': dict(depths=tuple(d * (n + 1) for d in (1, 2, 6, 3)),
                  train_image_size=train, eval_image_size=evaluation, dropout_rate=rate)
    for n, (train, evaluation, rate) in enumerate(_PUBLISHED)
}
# {'F0': {'train': 192, 'eval': 256}, ...}, for configs.
IMAGE_SIZES = {
    name: {'train': v['train_image_size'], 'eval': v['eval_image_size']}
    for name, v in VARIANTS.items()
}
_STAGE_WIDTHS = (256, 512, 1536, 1536)


class NFNetBlock(normalizer_free.NormalizerFreeBlock):
  """NFNet bottleneck: 1x1 -> grouped 3x3 (strided) -> grouped 3x3 -> 1x1 -> SE.

  Output ``shortcut + alpha * skip_gain * f(act(x) * beta)``; the shortcut of a
  block that changes shape is avg-pool (if strided) then a 1x1 conv. The other
  fields: normalizer_free.NormalizerFreeBlock (GELU, squeeze-excite 0.5 here).
  """
  activation: str = 'gelu'
  se_ratio: float = 0.5
  expansion: float = 0.5
  group_width: int = 128

  def project(self, out, conv):
    if self.strides > 1:
      out = nn.avg_pool(out, (2, 2), strides=(2, 2), padding='SAME')
    return conv(self.features, 1, name='shortcut_conv')(out)

  def branch(self, out, act, conv):
    groups = max(1, int(self.features * self.expansion) // self.group_width)
    width = groups * self.group_width
    out = conv(width, 1, name='conv0')(out)
    out = conv(width, 3, strides=self.strides, feature_group_count=groups,
               name='conv1')(act(out))
    out = conv(width, 3, feature_group_count=groups, name='conv1b')(act(out))
    return conv(self.features, 1, name='conv2')(act(out))


class NFNet(normalizer_free.NormalizerFreeNet):
  """NFNet-F0..F7; ``width`` multiplies the stage widths. The other fields:
  normalizer_free.NormalizerFreeNet (with GELU and squeeze-excite 0.5 by default)."""
  activation: str = 'gelu'
  se_ratio: float = 0.5
  variant: str = 'F0'
  group_width: int = 128
  final_conv_mult: float = 2.0

  family = 'nfnet'
  layout = ('variant', VARIANTS)

  block_class = NFNetBlock

  def stage_depths(self):
    return VARIANTS[self.variant]['depths']

  def stage_widths(self):
    return [int(w * self.width) for w in _STAGE_WIDTHS]

  def stem(self, images, act, conv):
    x = conv(16, 3, strides=2, name='stem_conv0')(images)
    x = conv(32, 3, name='stem_conv1')(act(x))
    x = conv(64, 3, name='stem_conv2')(act(x))
    return conv(self.stage_widths()[0] // 2, 3, strides=2, name='stem_conv3')(act(x))

  def block_options(self):
    return dict(group_width=self.group_width)

  def before_head(self, x, conv):
    return conv(int(self.stage_widths()[-1] * self.final_conv_mult), 1,
                name='final_conv')(x)


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

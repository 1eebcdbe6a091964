"""Normalizer-free ResNets (Brock et al. 2021a), the ImageNet models of De et al. 2022.

A ResNet-v2 bottleneck network with no normalisation layer at all: scaled
weight-standardised convs, scaled activations, and residual blocks of the form
``x + alpha * skip_gain * f(act(x) / beta)``, where beta is the analytically
expected std of x and skip_gain starts at 0. Nothing is computed across examples,
so the model is safe for per-example gradient clipping. NF-ResNet-50 has about 25.5M
parameters at 1000 classes.
"""

import flax.linen as nn

from image_classification.models import layers
from image_classification.models import normalizer_free
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


class NFResNetBlock(normalizer_free.NormalizerFreeBlock):
  """NF bottleneck block: 1x1 -> 3x3 (strided) -> 1x1, optional SE, skip gain; the
  shortcut of a block that changes shape is a strided 1x1 conv. The other fields:
  normalizer_free.NormalizerFreeBlock."""
  bottleneck_ratio: float = 0.25

  def project(self, out, conv):
    return conv(self.features, 1, strides=self.strides, name='shortcut_conv')(out)

  def branch(self, out, act, conv):
    width = int(self.features * self.bottleneck_ratio)
    out = conv(width, 1, name='conv0')(out)
    out = conv(width, 3, strides=self.strides, name='conv1')(act(out))
    return conv(self.features, 1, name='conv2')(act(out))


class NFResNet(normalizer_free.NormalizerFreeNet):
  """NF-ResNet-{26,50,101,152,200}; ``width`` multiplies every channel count.
  The other fields: normalizer_free.NormalizerFreeNet."""
  depth: int = 50

  family = 'nf_resnet'
  layout = ('depth', STAGE_DEPTHS)

  block_class = NFResNetBlock

  def stage_depths(self):
    return STAGE_DEPTHS[self.depth]

  def stage_widths(self):
    return [int(w * self.width) for w in _STAGE_WIDTHS]

  def stem(self, images, act, conv):
    x = conv(int(64 * self.width), 7, strides=2, use_bias=False, name='stem_conv')(images)
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')


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

"""What NF-ResNet (nf_resnet.py) and NFNet (nfnet.py) share: the fields of the network,
the variance bookkeeping of the residual stages, the end of a residual block and the
pooled head. Nothing here takes a statistic across examples, so per-example gradients
(and their clipping) see each example on its own.

The helpers that create layers are called from inside a module's ``@nn.compact``
method and create their layers in that module, under the names the two families have
always used ('se', 'skip_gain', 'head'), so the parameter trees (and the pre-trained
checkpoints that hold them) are unchanged.
"""
import functools
from typing import Any, Callable, Iterator, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from image_classification.models import layers

# Stride of each stage's first block.
STAGE_STRIDES = (1, 2, 2, 2)


class NormalizerFreeNet(nn.Module):
  """The fields common to the normaliser-free families; each family adds its layout
  field (depth / variant) and may change a default."""
  num_classes: int
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

  # The family's name, and its layout field with the table of the values it takes
  # (e.g. ('depth', {26: ..., 50: ...})).
  family = 'normalizer_free'
  layout = ('', {})  # not a dataclass field (no annotation)

  def validate(self) -> None:
    """Raises ValueError naming a bad field."""
    field, table = self.layout
    if getattr(self, field) not in table:
      raise ValueError(f'{self.family} {field}={getattr(self, field)!r} is not '
                       f'supported; choose one of {sorted(table)}')
    if self.width <= 0:
      raise ValueError(f'{self.family} width={self.width} must be > 0')
    layers.get_activation(self.activation, scaled=True)

  # What a family gives: its block class, the blocks per stage and the stage widths,
  # the stem, any extra block fields, and what comes between the last stage and the
  # pooled head.
  block_class = None

  def stage_depths(self) -> Sequence[int]:
    raise NotImplementedError

  def stage_widths(self) -> Sequence[int]:
    raise NotImplementedError

  def stem(self, images: jax.Array, act: Callable[[jax.Array], jax.Array],
           conv: Callable[..., nn.Module]) -> jax.Array:
    raise NotImplementedError

  def block_options(self) -> dict:
    return {}

  def before_head(self, x: jax.Array, conv: Callable[..., nn.Module]) -> jax.Array:
    return x

  @nn.compact
  def __call__(self, images: jax.Array, is_training: bool = False) -> jax.Array:
    self.validate()
    act = layers.get_activation(self.activation, scaled=True)
    conv = functools.partial(layers.ScaledWSConv, dtype=self.dtype)
    x = self.stem(images.astype(self.dtype), act, conv)
    widths = self.stage_widths()
    for stage, b, block in stage_blocks(self.stage_depths(), self.alpha,
                                        self.stochastic_depth_rate):
      x = self.block_class(  # pylint: disable=not-callable
          features=widths[stage], activation=self.activation, se_ratio=self.se_ratio,
          dtype=self.dtype, name=f'stage{stage}_block{b}', **self.block_options(),
          **block)(x, is_training)
    x = self.before_head(x, conv)
    return pooled_head(x, act, num_classes=self.num_classes,
                       dropout_rate=self.dropout_rate, dtype=self.dtype,
                       is_training=is_training)


class NormalizerFreeBlock(nn.Module):
  """An NF residual block: ``shortcut + alpha * skip_gain * f(act(x) * beta)``.

  A family gives the residual branch f (``branch``) and the projection shortcut of a
  block that changes shape (``project``); both create their layers in this block.
  """
  features: int
  strides: int = 1
  beta: float = 1.0
  alpha: float = 0.2
  activation: str = 'relu'
  se_ratio: float = 0.0
  stochastic_depth_rate: float = 0.0
  dtype: Any = jnp.float32

  def branch(self, out: jax.Array, act: Callable[[jax.Array], jax.Array],
             conv: Callable[..., nn.Module]) -> jax.Array:
    raise NotImplementedError

  def project(self, out: jax.Array, conv: Callable[..., nn.Module]) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    act = layers.get_activation(self.activation, scaled=True)
    conv = functools.partial(layers.ScaledWSConv, dtype=self.dtype)
    out = act(x) * self.beta
    shortcut = x
    if self.strides > 1 or x.shape[-1] != self.features:
      shortcut = self.project(out, conv)
    out = self.branch(out, act, conv)
    return residual_output(
        out, shortcut, features=self.features, se_ratio=self.se_ratio,
        stochastic_depth_rate=self.stochastic_depth_rate, alpha=self.alpha,
        dtype=self.dtype, is_training=is_training)


def stage_blocks(depths: Sequence[int], alpha: float, stochastic_depth_rate: float
                 ) -> Iterator[Tuple[int, int, dict]]:
  """(stage, block index, block kwargs) for every residual block, in order.

  The kwargs are the block's strides, its ``beta`` = 1 / (the analytically expected
  std of its input), ``alpha`` and its stochastic-depth rate (growing linearly with
  the block's index up to ``stochastic_depth_rate``).
  """
  num_blocks = sum(depths)
  expected_std = 1.0
  index = 0
  for stage, (depth, stride) in enumerate(zip(depths, STAGE_STRIDES)):
    for b in range(depth):
      yield stage, b, dict(
          strides=stride if b == 0 else 1, beta=1.0 / expected_std, alpha=alpha,
          stochastic_depth_rate=stochastic_depth_rate * index / num_blocks)
      index += 1
      # The first block's projection shortcut resets the variance to ~1.
      expected_std = 1.0 if b == 0 else expected_std
      expected_std = (expected_std**2 + alpha**2) ** 0.5


def residual_output(out: jax.Array, shortcut: jax.Array, *, features: int,
                    se_ratio: float, stochastic_depth_rate: float, alpha: float,
                    dtype: Any, is_training: bool) -> jax.Array:
  """``shortcut + alpha * skip_gain * stochastic_depth(se(out))``: the end of an NF
  block (optional squeeze-excite 'se', then stochastic depth, the zero-initialised
  'skip_gain' and the scaled sum)."""
  if se_ratio > 0:
    hidden = max(1, int(features * se_ratio))
    out = 2.0 * layers.SqueezeExcite(features, hidden, dtype=dtype, name='se')(out) * out
  out = layers.StochasticDepth(stochastic_depth_rate)(out, is_training)
  out = layers.SkipGain(name='skip_gain')(out)
  return out * alpha + shortcut


def pooled_head(x: jax.Array, act: Callable[[jax.Array], jax.Array], *,
                num_classes: int, dropout_rate: float, dtype: Any,
                is_training: bool) -> jax.Array:
  """act, global average pooling, dropout ('dropout' rng) and the zero-initialised
  'head'; float32 logits."""
  x = jnp.mean(act(x), axis=(1, 2))
  x = nn.Dropout(dropout_rate, deterministic=not is_training)(x)
  logits = nn.Dense(num_classes, kernel_init=nn.initializers.zeros, dtype=dtype,
                    name='head')(x)
  return logits.astype(jnp.float32)

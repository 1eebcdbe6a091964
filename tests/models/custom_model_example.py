"""Flax models a user might write outside the package, for tests/models/
test_custom_model.py (config.model.name = 'tests/models/custom_model_example.py:TinyNet'
or 'tests.models.custom_model_example:TinyNet')."""
import flax.linen as nn
import jax.numpy as jnp


class Scale(nn.Module):
  """A layer the fast paths have no rule for: the generic per-example rule serves it."""

  @nn.compact
  def __call__(self, x):
    return x * self.param('scale', nn.initializers.ones, (x.shape[-1],))


class TinyNet(nn.Module):
  """Conv and Dense (fast rules), Scale and GroupNorm (generic rule)."""
  num_classes: int
  width: int = 4

  @nn.compact
  def __call__(self, x, is_training: bool):
    del is_training
    x = nn.Conv(self.width, (3, 3))(x)
    x = nn.GroupNorm(num_groups=2)(Scale()(jnp.tanh(x)))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(4, (3, 3))(x)
    return nn.BatchNorm(use_running_average=not train)(x)


class BatchNormNet(nn.Module):
  """BatchNorm inside a sub-module: refused, naming 'block1/BatchNorm_0'."""
  num_classes: int

  @nn.compact
  def __call__(self, x, is_training: bool):
    x = Block(name='block1')(x, is_training)
    return nn.Dense(self.num_classes)(x.mean((1, 2)))


class RematNet(nn.Module):
  """A layer inside nn.remat: the tape cannot record it, so 'vmap' trains it."""
  num_classes: int

  @nn.compact
  def __call__(self, x, is_training: bool):
    del is_training
    x = nn.remat(nn.Conv)(4, (3, 3))(x)
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class NoTrainingFlag(nn.Module):
  """Its __call__ lacks is_training: refused with the signature to write."""
  num_classes: int

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))

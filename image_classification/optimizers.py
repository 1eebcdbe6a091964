"""Optax optimizers and learning-rate schedules from config.training.

They act on the privatised gradient, so everything here is post-processing: no
privacy cost, and free to use any state (momentum, Adam moments).
"""
import math

import ml_collections
import optax

from image_classification import errors
from image_classification import registry

# config.training.optimizer.name -> optax optimizer(schedule, config.training.optimizer).
OPTIMIZERS = registry.Registry('optimizer')
# config.training.lr_schedule.name -> optax schedule(learning_rate, decay_steps).
SCHEDULES = registry.Registry('learning-rate schedule')


@OPTIMIZERS.register('sgd')
def _sgd(schedule, opt: ml_collections.ConfigDict):
  return optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov)


@OPTIMIZERS.register('adam')
def _adam(schedule, opt: ml_collections.ConfigDict):
  del opt  # Adam's betas are optax's defaults
  return optax.adam(schedule)


@SCHEDULES.register('constant')
def _constant(lr: float, decay_steps: int):
  del decay_steps
  return optax.constant_schedule(lr)


@SCHEDULES.register('cosine')
def _cosine(lr: float, decay_steps: int):
  return optax.cosine_decay_schedule(lr, decay_steps)


@SCHEDULES.register('linear')
def _linear(lr: float, decay_steps: int):
  return optax.linear_schedule(lr, 0.0, decay_steps)


def validate_config(training: ml_collections.ConfigDict) -> None:
  """Checks config.training.optimizer and .lr_schedule; raises ConfigError."""
  if training.optimizer.name not in OPTIMIZERS:
    errors.config_fail('training.optimizer.name', training.optimizer.name,
                       f'choose one of {tuple(OPTIMIZERS)}')
  o = training.optimizer
  if not (o.learning_rate > 0 and math.isfinite(o.learning_rate)):
    errors.config_fail('training.optimizer.learning_rate', o.learning_rate,
                       'must be a finite number > 0')
  if not 0 <= (o.momentum or 0.0) < 1:  # None: no momentum
    errors.config_fail('training.optimizer.momentum', o.momentum,
                       'must be in [0, 1) (0: plain SGD)')
  if not ((o.weight_decay or 0.0) >= 0 and math.isfinite(o.weight_decay or 0.0)):
    errors.config_fail('training.optimizer.weight_decay', o.weight_decay,
                       'must be a finite number >= 0')
  if not training.lr_schedule.warmup_steps >= 0:
    errors.config_fail('training.lr_schedule.warmup_steps',
                       training.lr_schedule.warmup_steps, 'must be >= 0 (0: no warm-up)')
  if training.lr_schedule.name not in SCHEDULES:
    errors.config_fail('training.lr_schedule.name', training.lr_schedule.name,
                       f'choose one of {tuple(SCHEDULES)}')


def learning_rate_schedule(training: ml_collections.ConfigDict, num_steps: int):
  lr = training.optimizer.learning_rate
  name = training.lr_schedule.name
  warmup = int(training.lr_schedule.warmup_steps)
  decay_steps = max(1, num_steps - warmup)
  if name not in SCHEDULES:
    raise ValueError(f'config.training.lr_schedule.name={name!r}; choose one of '
                     f'{tuple(SCHEDULES)}')
  schedule = SCHEDULES[name](lr, decay_steps)
  if warmup > 0:
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])
  return schedule


def make_optimizer(training: ml_collections.ConfigDict, num_steps: int):
  """Returns (optax optimizer, schedule)."""
  opt = training.optimizer
  schedule = learning_rate_schedule(training, num_steps)
  if opt.name not in OPTIMIZERS:
    raise ValueError(f'config.training.optimizer.name={opt.name!r}; choose one of '
                     f'{tuple(OPTIMIZERS)}')
  tx = OPTIMIZERS[opt.name](schedule, opt)
  if opt.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(opt.weight_decay), tx)
  return tx, schedule

"""The checks of config.training (the step and the loop's fields), before anything is
loaded: ``validate_config(config, num_devices)`` raises ConfigError naming the field
and the fix. Its optimizer and schedule are checked by optimizers.py.

Imports nothing of the training package, so that config.validate (a lower layer:
tests/test_architecture.py puts this module beside it) calls it with the other
sections' checks, in one order.
"""
import math
import ml_collections

from image_classification import errors
from image_classification import optimizers
from image_classification.models import registry
from image_classification.privacy import clipped_sums

_fail = errors.config_fail


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Checks config.training; raises ConfigError naming the field."""
  t = config.training
  if not t.batch_size > 0:
    _fail('training.batch_size', t.batch_size, 'must be > 0')
  if not t.eval_batch_size > 0:
    _fail('training.eval_batch_size', t.eval_batch_size,
          'must be > 0 (examples per evaluation batch, e.g. 1000)')
  if t.batch_size % num_devices:
    _fail('training.batch_size', t.batch_size,
          f'must be divisible by the number of devices ({num_devices}); use e.g. '
          f'{max(num_devices, t.batch_size // num_devices * num_devices)}')
  if t.micro_batch_size < 0:
    _fail('training.micro_batch_size', t.micro_batch_size, 'must be >= 0 (0: no split)')
  if t.per_example_grads not in clipped_sums.names():
    _fail('training.per_example_grads', t.per_example_grads,
          f'choose one of {list(clipped_sums.names())}')
  if t.compute_dtype not in registry.COMPUTE_DTYPES:
    _fail('training.compute_dtype', t.compute_dtype,
          f'choose one of {list(registry.COMPUTE_DTYPES)} (the dtype of convolutions '
          'and activations; parameters, clipping and noise are always float32)')
  _validate_length(t)
  optimizers.validate_config(t)
  if not 0 <= t.ema.decay < 1:
    _fail('training.ema.decay', t.ema.decay, 'must be in [0, 1) (0 disables EMA)')
  if not t.ema.start_step >= 0:
    _fail('training.ema.start_step', t.ema.start_step,
          'must be >= 0 (the step from which the EMA averages)')
  for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if t[field] < 0:
      _fail(f'training.{field}', t[field], 'must be >= 0')
  if not t.checkpoint_every_minutes >= 0:
    _fail('training.checkpoint_every_minutes', t.checkpoint_every_minutes,
          'must be >= 0 (0: no checkpoints by wall time)')
  if t.select_on_validation:
    if not config.data.validation_fraction > 0:
      _fail('training.select_on_validation', True,
            'needs a validation split to select on: set data.validation_fraction > 0 '
            '(e.g. 0.1, held out of training) or leave select_on_validation False')
    if not t.eval_every_steps > 0:
      _fail('training.select_on_validation', True,
            'needs evaluations to choose among: set training.eval_every_steps > 0 (the '
            'final step is evaluated too)')


def _validate_length(t: ml_collections.ConfigDict) -> None:
  """Exactly one of training.num_steps and training.num_epochs."""
  if not math.isfinite(t.num_epochs):  # NaN passes every comparison below
    _fail('training.num_epochs', t.num_epochs, 'must be a finite number >= 0')
  if t.num_steps < 0:
    _fail('training.num_steps', t.num_steps, 'must be >= 0')
  if t.num_epochs < 0:
    _fail('training.num_epochs', t.num_epochs, 'must be >= 0')
  if t.num_steps > 0 and t.num_epochs > 0:
    _fail('training.num_steps', t.num_steps,
          f'and training.num_epochs={t.num_epochs} are both set; set exactly one, the '
          'other to 0 (to shorten an epoch-based config: --config.training.num_epochs=0 '
          f'--config.training.num_steps={t.num_steps})')
  if t.num_steps <= 0 and t.num_epochs <= 0:
    _fail('training.num_steps', t.num_steps,
          f'set exactly one of training.num_steps and training.num_epochs to > 0 '
          f'(num_epochs={t.num_epochs})')

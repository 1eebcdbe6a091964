"""Config validation: every bad field is named, with what would fix it, before any data
is loaded or anything compiles.

``validate(config, num_devices)`` checks the config alone; ``validate_with_data``
checks what needs the dataset size (batch vs dataset, delta vs 1/N);
``check_workdir`` checks the output folder.
"""
import os

import ml_collections

from image_classification import optimizers
from image_classification import plan as plan_lib
from image_classification.data import datasets
from image_classification.models import features
from image_classification.models import registry
from image_classification.privacy import clipped_sums
from image_classification import errors

WANDB_MODES = ('disabled', 'offline', 'online')
# config.audit.mode and, for mode 'gradient', its analysis and score (docs/audit.md).
AUDIT_MODES = ('input', 'gradient')
AUDIT_ANALYSES = ('fdp', 'fdp_gaussian', 'one_run')
AUDIT_SCORES = ('llr', 'sum', 'last_iterate')


class ConfigError(errors.UserError):
  """A config field is invalid; the message names it and says what would fix it."""


def _fail(field: str, value, why: str):
  raise ConfigError(f'config.{field}={value!r}: {why}')


def validate(config: ml_collections.ConfigDict, num_devices: int,
             dry_run: bool = False) -> None:
  m = config.model
  try:  # a registered name, or the user's own model that imports (models/custom.py)
    registry.check_name(m.name)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  norm = m.kwargs.get('normalization', None)
  if norm is not None and 'batch' in str(norm).lower():
    _fail('model.kwargs.normalization', norm,
          'BatchNorm mixes statistics across examples, so one example affects the '
          "gradients of others and per-example clipping no longer bounds sensitivity; use "
          "'group_norm' or a normaliser-free model")
  if m.pretrained_path and not dry_run and not os.path.exists(m.pretrained_path):
    _fail('model.pretrained_path', m.pretrained_path,
          'no such checkpoint; point it at pre-trained parameters (see docs/configs.md, '
          'fine-tuning) or leave it empty to train from scratch')

  d = config.data
  _validate_features(m, d)
  if d.name not in datasets.names():
    _fail('data.name', d.name, f'unknown dataset; choose one of {list(datasets.names())}')
  if d.path and not os.path.exists(d.path):
    _fail('data.path', d.path, 'no such file or folder; give the folder that holds the '
          "dataset's original files, or leave it empty to use tfds")
  if d.get('prefetch', 0) < 0:
    _fail('data.prefetch', d.prefetch, 'must be >= 0 (0: no background loading)')
  workers = d.get('num_workers', -1)
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < -1:
    _fail('data.num_workers', workers, 'give the number of worker processes that '
          'decode on-disk images: -1 (one per core), 0 (the loading thread) or more')
  if d.augmult < 1:
    _fail('data.augmult', d.augmult, 'must be >= 1 (1 means no augmentation multiplicity)')
  for field in ('max_train_examples', 'max_test_examples'):
    if d[field] < 0:
      _fail(f'data.{field}', d[field], 'must be >= 0 (0 keeps every example)')
  if d.image_size < 0:
    _fail('data.image_size', d.image_size,
          'must be >= 0 (0 keeps the native size; > 0 resizes to a square)')
  num_classes = d.get('num_classes', 0) or 0
  spec = datasets.get(d.name).num_classes
  if num_classes < 0:
    _fail('data.num_classes', num_classes, 'must be >= 0 (0: from the dataset)')
  if d.name == 'npz' and num_classes < 2:
    _fail('data.num_classes', num_classes,
          'an npz dataset must state its number of classes (>= 2), e.g. '
          '--config.data.num_classes=10: the model\'s head must not depend on which '
          'labels happen to occur in the private data')
  if spec is not None and num_classes not in (0, spec):
    _fail('data.num_classes', num_classes,
          f'{d.name} has {spec} classes; set {spec} or leave it 0')

  try:  # config.privacy: the plan's fields, checked by the plan module
    plan_lib.validate_privacy(config)
  except plan_lib.PlanError as e:
    raise ConfigError(str(e)) from e

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
  compute_dtype = t.get('compute_dtype', 'float32')
  if compute_dtype not in registry.COMPUTE_DTYPES:
    _fail('training.compute_dtype', compute_dtype,
          f'choose one of {list(registry.COMPUTE_DTYPES)} (the dtype of convolutions '
          'and activations; parameters, clipping and noise are always float32)')
  if 'dtype' in m.kwargs:
    _fail('model.kwargs.dtype', m.kwargs.dtype,
          "is not a model option; set config.training.compute_dtype ('float32' or "
          "'bfloat16') instead")
  if t.num_steps > 0 and t.num_epochs > 0:
    _fail('training.num_steps', t.num_steps,
          f'and training.num_epochs={t.num_epochs} are both set; set exactly one, the '
          'other to 0 (to shorten an epoch-based config: --config.training.num_epochs=0 '
          f'--config.training.num_steps={t.num_steps})')
  if t.num_steps <= 0 and t.num_epochs <= 0:
    _fail('training.num_steps', t.num_steps,
          f'set exactly one of training.num_steps and training.num_epochs to > 0 '
          f'(num_epochs={t.num_epochs})')
  if t.num_steps < 0 or t.num_epochs < 0:
    _fail('training.num_steps', t.num_steps, 'must be >= 0')
  if t.optimizer.name not in optimizers.OPTIMIZERS:
    _fail('training.optimizer.name', t.optimizer.name,
          f'choose one of {optimizers.OPTIMIZERS}')
  if not t.optimizer.learning_rate > 0:
    _fail('training.optimizer.learning_rate', t.optimizer.learning_rate, 'must be > 0')
  if t.lr_schedule.name not in optimizers.SCHEDULES:
    _fail('training.lr_schedule.name', t.lr_schedule.name,
          f'choose one of {optimizers.SCHEDULES}')
  if not 0 <= t.ema.decay < 1:
    _fail('training.ema.decay', t.ema.decay, 'must be in [0, 1) (0 disables EMA)')
  for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
    if t[field] < 0:
      _fail(f'training.{field}', t[field], 'must be >= 0')
  if not t.get('checkpoint_every_minutes', 0.0) >= 0:
    _fail('training.checkpoint_every_minutes', t.checkpoint_every_minutes,
          'must be >= 0 (0: no checkpoints by wall time)')
  fraction = d.get('validation_fraction', 0.0)
  if not 0 <= fraction < 1:
    _fail('data.validation_fraction', fraction,
          'must be in [0, 1): the fraction of the training split held out for model '
          'selection (0: none)')
  if t.get('select_on_validation', False):
    if not fraction > 0:
      _fail('training.select_on_validation', True,
            'needs a validation split to select on: set data.validation_fraction > 0 '
            '(e.g. 0.1, held out of training) or leave select_on_validation False')
    if not t.eval_every_steps > 0:
      _fail('training.select_on_validation', True,
            'needs evaluations to choose among: set training.eval_every_steps > 0 (the '
            'final step is evaluated too)')
  if config.wandb.mode not in WANDB_MODES:
    _fail('wandb.mode', config.wandb.mode, f'choose one of {WANDB_MODES}')
  if config.audit.enabled:
    if config.audit.num_canaries < 2:
      _fail('audit.num_canaries', config.audit.num_canaries, 'must be >= 2')
    if not 0 < config.audit.confidence < 1:
      _fail('audit.confidence', config.audit.confidence, 'must be in (0, 1)')
    _validate_audit_mode(config)


def _validate_audit_mode(config: ml_collections.ConfigDict) -> None:
  """config.audit's mode and, for mode 'gradient', its analysis, score and sampling."""
  a = config.audit
  mode = a.get('mode', 'input')
  if mode not in AUDIT_MODES:
    _fail('audit.mode', mode, f'choose one of {AUDIT_MODES}')
  if mode != 'gradient':
    return
  if a.analysis not in AUDIT_ANALYSES:
    _fail('audit.analysis', a.analysis, f'choose one of {AUDIT_ANALYSES}')
  if a.score not in AUDIT_SCORES:
    _fail('audit.score', a.score, f'choose one of {AUDIT_SCORES}')
  if not a.num_guesses >= 0:
    _fail('audit.num_guesses', a.num_guesses,
          'must be >= 0 (0: chosen before training from public numbers)')
  if config.privacy.sampling != 'poisson':
    _fail('privacy.sampling', config.privacy.sampling,
          "audit.mode='gradient' needs sampling='poisson': the audit tests add/remove "
          'of one canary, which fixed-size (replace-one) batches are not accounted for')


def _validate_features(m: ml_collections.ConfigDict, d: ml_collections.ConfigDict) -> None:
  """config.model.features: a known extractor, and no augmentation (the features are
  computed once from the un-augmented images)."""
  name = m.get('features', '') or ''
  if not name:
    if m.get('features_kwargs', None):
      _fail('model.features_kwargs', m.features_kwargs.to_dict(),
            "set only with config.model.features (e.g. 'scattering')")
    return
  if name not in features.available():
    _fail('model.features', name,
          f"unknown feature extractor; choose one of {features.available()} or '' (none)")
  for field in ('random_crop', 'random_flip', 'random_resized_crop'):
    if d.get(field, False):
      _fail(f'data.{field}', d[field],
            f'config.model.features={name!r} computes the features once from the '
            'un-augmented images, so augmentation cannot be applied; set it False')
  if d.augmult != 1:
    _fail('data.augmult', d.augmult,
          f'config.model.features={name!r} takes no augmentation, so every view would '
          'be the same example; set 1')


def validate_with_data(config: ml_collections.ConfigDict, dataset_size: int) -> None:
  """What needs the training set's size N (the privacy plan's checks)."""
  try:
    plan_lib.validate_with_data(config, dataset_size)
  except plan_lib.PlanError as e:
    raise ConfigError(str(e)) from e


def check_workdir(workdir: str) -> None:
  """Refuses a --workdir that cannot hold run files, before anything is loaded.

  Nothing is created: a workdir that does not exist yet must lie under a writable
  folder.
  """
  if not workdir:
    raise ConfigError('--workdir is required: the folder where the run writes its files')
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f'--workdir={workdir} is a file, not a folder; give a folder '
                      '(it is created if missing)')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f'--workdir={workdir} lies under {existing}, which is a file; '
                      'give a folder path')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f'--workdir={workdir}: {existing} is not writable by this user; '
                      'choose a folder you can write to')

"""Config validation: every bad field is named, with what would fix it, before any data
is loaded or anything compiles.

``validate(config, num_devices)`` checks the config alone; ``validate_with_data``
checks what needs the dataset size (batch vs dataset, delta vs 1/N);
``check_workdir`` checks the output folder.
"""
import math
import os

from absl import logging
import ml_collections

from image_classification import optimizers
from image_classification.data import sources
from image_classification.models import registry
from image_classification.privacy import accounting
from image_classification.privacy import plan as plan_lib

WANDB_MODES = ('disabled', 'offline', 'online')


class ConfigError(ValueError):
  """A config field is invalid; the message names it and says what would fix it."""


def _fail(field: str, value, why: str):
  raise ConfigError(f'config.{field}={value!r}: {why}')


def validate(config: ml_collections.ConfigDict, num_devices: int,
             dry_run: bool = False) -> None:
  m = config.model
  if m.name not in registry.available():
    _fail('model.name', m.name, f'unknown model; choose one of {registry.available()}')
  norm = m.kwargs.get('normalization', None)
  if norm is not None and 'batch' in str(norm).lower():
    _fail('model.kwargs.normalization', norm,
          'BatchNorm mixes statistics across examples, so one example affects the '
          "gradients of others and per-example clipping no longer bounds sensitivity; use "
          "'group_norm' or a normaliser-free model")
  if m.pretrained_path and not dry_run and not os.path.exists(m.pretrained_path):
    _fail('model.pretrained_path', m.pretrained_path,
          'no such checkpoint; point it at pre-trained parameters (see README, '
          'fine-tuning) or leave it empty to train from scratch')

  d = config.data
  if d.name not in sources.DATASETS:
    _fail('data.name', d.name, f'unknown dataset; choose one of {list(sources.DATASETS)}')
  if d.path and not os.path.exists(d.path):
    _fail('data.path', d.path, 'no such file or folder; give the folder that holds the '
          "dataset's original files, or leave it empty to use tfds")
  if d.get('prefetch', 0) < 0:
    _fail('data.prefetch', d.prefetch, 'must be >= 0 (0: no background loading)')
  if d.augmult < 1:
    _fail('data.augmult', d.augmult, 'must be >= 1 (1 means no augmentation multiplicity)')
  for field in ('max_train_examples', 'max_test_examples'):
    if d[field] < 0:
      _fail(f'data.{field}', d[field], 'must be >= 0 (0 keeps every example)')
  if d.image_size < 0:
    _fail('data.image_size', d.image_size,
          'must be >= 0 (0 keeps the native size; > 0 resizes to a square)')
  num_classes = d.get('num_classes', 0) or 0
  spec = sources.spec_num_classes(d.name)
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

  p = config.privacy
  if not p.allow_non_private or p.noise_multiplier:
    if not (isinstance(p.target_epsilon, (int, float)) and p.target_epsilon > 0
            and math.isfinite(p.target_epsilon)):
      _fail('privacy.target_epsilon', p.target_epsilon,
            'must be a finite number > 0 (set privacy.allow_non_private=True for a '
            'run without noise)')
  if not 0 < p.delta < 1:
    _fail('privacy.delta', p.delta, 'must be in (0, 1); usually well below 1/N')
  if not p.clipping_norm > 0:
    _fail('privacy.clipping_norm', p.clipping_norm, 'must be > 0')
  if p.noise_multiplier is not None and p.noise_multiplier < 0:
    _fail('privacy.noise_multiplier', p.noise_multiplier,
          'must be >= 0, or None to calibrate it to the target epsilon')
  if p.noise_multiplier == 0 and not p.allow_non_private:
    _fail('privacy.noise_multiplier', 0.0, 'zero noise gives no privacy; set '
          'privacy.allow_non_private=True to run without DP on purpose')
  if p.accountant not in accounting.ACCOUNTANTS:
    _fail('privacy.accountant', p.accountant, f'choose one of {accounting.ACCOUNTANTS}')
  if p.sampling not in accounting.SAMPLINGS:
    _fail('privacy.sampling', p.sampling, f'choose one of {accounting.SAMPLINGS}')
  mechanism = p.get('mechanism', 'dpsgd')
  if mechanism not in accounting.MECHANISMS:
    _fail('privacy.mechanism', mechanism, f'choose one of {accounting.MECHANISMS}')
  bands = p.get('num_bands', 1)
  if not (isinstance(bands, int) and bands >= 1):
    _fail('privacy.num_bands', bands, 'must be an integer >= 1 (1 is DP-SGD)')
  if mechanism == 'dpsgd' and bands != 1:
    _fail('privacy.num_bands', bands, "bands need privacy.mechanism='bandmf'")
  if mechanism == 'bandmf' and p.sampling != 'poisson':
    _fail('privacy.sampling', p.sampling, "privacy.mechanism='bandmf' needs "
          "sampling='poisson' (cyclic Poisson sampling; its amplified accounting has no "
          'fixed-size form)')
  if p.sampling == 'fixed' and p.accountant == 'pld':
    _fail('privacy.accountant', 'pld', "dp-accounting has no PLD for fixed-size "
          "batches (sampling without replacement); use accountant='rdp' or "
          "sampling='poisson'")

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
  from image_classification.privacy import fast_clipping  # pylint: disable=g-import-not-at-top
  if t.per_example_grads not in fast_clipping.IMPLEMENTATIONS:
    _fail('training.per_example_grads', t.per_example_grads,
          f'choose one of {fast_clipping.IMPLEMENTATIONS}')
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
  if config.wandb.mode not in WANDB_MODES:
    _fail('wandb.mode', config.wandb.mode, f'choose one of {WANDB_MODES}')
  if config.audit.enabled:
    if config.audit.num_canaries < 2:
      _fail('audit.num_canaries', config.audit.num_canaries, 'must be >= 2')
    if not 0 < config.audit.confidence < 1:
      _fail('audit.confidence', config.audit.confidence, 'must be in (0, 1)')


def validate_with_data(config: ml_collections.ConfigDict, dataset_size: int) -> None:
  t, p = config.training, config.privacy
  bands = p.get('num_bands', 1)
  if p.get('mechanism', 'dpsgd') == 'bandmf' and bands > 1:
    steps = plan_lib.num_steps(t, dataset_size)
    if bands > steps:
      _fail('privacy.num_bands', bands, f'is larger than the number of steps ({steps})')
    if steps % bands:
      _fail('privacy.num_bands', bands, f'must divide the number of steps ({steps}) so '
            'that every group takes part equally often; e.g. set training.num_steps to '
            f'{steps - steps % bands or bands}')
    if bands * t.batch_size > dataset_size:
      _fail('privacy.num_bands', bands, f'times training.batch_size ({t.batch_size}) '
            f'must be <= N = {dataset_size}: each of the b groups (about N/b examples) '
            f'must hold the expected batch; use b <= {dataset_size // t.batch_size}')
  if t.batch_size > dataset_size:
    _fail('training.batch_size', t.batch_size,
          f'is larger than the training set ({dataset_size} examples); lower it')
  if p.delta >= 1.0 / dataset_size:
    if not p.get('allow_large_delta', False):
      _fail('privacy.delta', p.delta,
            f'is >= 1/N = {1.0 / dataset_size:.3g} (N={dataset_size} training '
            'examples): such a delta permits releasing a few examples outright. Use '
            'delta well below 1/N (e.g. 1e-5 for CIFAR-10\'s N = 50,000), or set '
            'privacy.allow_large_delta=True to run it anyway (the privacy report '
            'then says so first)')
    logging.warning(
        'config.privacy.delta=%g is >= 1/N = %g (allowed by privacy.allow_large_delta): '
        'such a delta permits releasing a few examples outright.', p.delta,
        1.0 / dataset_size)


def large_delta(config: ml_collections.ConfigDict, dataset_size: int) -> bool:
  """Whether delta >= 1/N (only possible with privacy.allow_large_delta=True)."""
  return bool(config.privacy.delta >= 1.0 / dataset_size)


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

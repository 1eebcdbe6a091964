"""Memory and disk: the estimate a dry run prints, and one `error:` line instead of a
traceback when a run runs out of either.

``estimate(...)`` adds up, per device, what a training step holds: parameters,
optimizer state and EMA (sized exactly from the abstract optimizer state, nothing is
allocated), the gradient sum and update, the per-example gradients of the chosen
clipped-sum implementation, and the activations of micro_batch x augmult views at the
image size (from the layers' output shapes, traced abstractly), and compares the total
with the device's memory (on the CPU, with the host's available memory shared by its
devices). It is an estimate: XLA fuses and reuses buffers, and the input pipeline and
the dataset held in host memory come on top.

``translate_errors`` wraps the training entry point: an out-of-memory error (XLA
RESOURCE_EXHAUSTED, Python's MemoryError) or a full disk (OSError ENOSPC / EDQUOT,
also when a library words it "No space left on device") becomes a ResourceError whose
message names the fix, after the temporary files of unfinished writes (orbax's
temporary checkpoint folders, the run files' temporary copies) are removed. The last
complete checkpoint is kept: the same command resumes from it.
"""
import dataclasses
import errno
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from image_classification import config as config_lib
from image_classification import optimizers
from image_classification.models import features as features_lib
from image_classification.workdir import run_files
from image_classification.workdir import checkpoint_store
from image_classification.training import mesh as mesh_lib

GIB = 2.0 ** 30
# Activations held per innermost-layer output byte of one view: its output kept for
# the backward pass and a gradient of the same size ('vmap'); the tape of 'fast' and
# 'ghost' also keeps every layer's input and output gradient per example. Calibrated
# against XLA's memory analysis of the compiled step (results/memory_estimate.py: the
# estimate is 0.7-1.3x XLA's figure for the quickstart CNN and WRN-16-4 on the CPU).
ACTIVATION_FACTOR = {'vmap': 2}
TAPE_ACTIVATION_FACTOR = 4
# The clipped sum, the noisy gradient and the optimizer's update: three gradient-sized
# buffers at the peak of the update.
GRADIENT_COPIES = 3


class ResourceError(config_lib.ConfigError):
  """The run ran out of memory or disk; the message names the fix. The last complete
  checkpoint is kept (a ConfigError, so launch.py prints one `error:` line, exit 2)."""


# --------------------------------------------------------------------- estimate
@dataclasses.dataclass
class MemoryEstimate:
  """Bytes per device of each part of a training step, and what is available."""
  parts: dict
  micro_batch: int
  augmult: int
  image_shape: tuple
  per_example_grads: str
  available: int | None      # bytes (None: unknown)
  where: str                 # what ``available`` is, in words
  devices_sharing: int = 1   # devices that share ``available`` (CPU devices: the host)

  @property
  def total(self) -> int:
    return int(sum(self.parts.values()))

  @property
  def exceeds(self) -> bool:
    return (self.available is not None
            and self.total * self.devices_sharing > self.available)

  def describe(self) -> str:
    parts = ', '.join(f'{name} {_size(b)}' for name, b in self.parts.items() if b)
    need = _size(self.total) + (f' x {self.devices_sharing} devices'
                                if self.devices_sharing > 1 else '')
    have = (f'{_size(self.available)} {self.where}' if self.available is not None
            else f'unknown {self.where}')
    return (f'memory estimate per device: about {need} ({parts}; micro-batch '
            f'{self.micro_batch} x augmult {self.augmult} at images '
            f'{"x".join(map(str, self.image_shape))}, per-example gradients '
            f"'{self.per_example_grads}'); available: {have}")

  def to_json(self) -> dict:
    return {'bytes_per_device': self.total, 'parts': dict(self.parts),
            'micro_batch': self.micro_batch, 'augmult': self.augmult,
            'available_bytes': self.available, 'available': self.where,
            'devices_sharing_it': self.devices_sharing, 'exceeds': self.exceeds}


def _size(num_bytes) -> str:
  if num_bytes >= GIB:
    return f'{num_bytes / GIB:.1f} GiB'
  return f'{num_bytes / 2 ** 20:.0f} MiB' if num_bytes >= 2 ** 20 else (
      f'{num_bytes / 1024:.0f} KiB')


def _bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                 for x in jax.tree_util.tree_leaves(tree)))


def activation_bytes(model: nn.Module, params, image_shape: tuple) -> int:
  """Bytes of the outputs of the model's innermost layers for ONE image in a training
  forward pass (traced abstractly; an estimate of what backprop keeps per view)."""
  outputs = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      outputs[tuple(context.module.path)] = _bytes(out)
    return out

  def forward(p):
    x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    with nn.intercept_methods(interceptor):
      return model.apply({'params': p}, x, is_training=True,
                         rngs={'dropout': jax.random.PRNGKey(0)})

  jax.eval_shape(forward, params)
  # A layer that contains other layers repeats their outputs: count the innermost.
  inner = [p for p in outputs if not any(q[:len(p)] == p and q != p for q in outputs)]
  return int(np.prod(image_shape)) * 4 + sum(outputs[p] for p in inner)


def available_memory(devices) -> tuple[int | None, str, int]:
  """(bytes, words, devices sharing them): the accelerator's memory, or on the CPU
  the host's available memory (all CPU devices share it)."""
  device = devices[0]
  if device.platform != 'cpu':
    try:
      stats = device.memory_stats() or {}
    except Exception:  # pylint: disable=broad-except
      stats = {}
    limit = stats.get('bytes_limit')
    return (int(limit) if limit else None,
            f'on each {mesh_lib.describe(devices).rsplit(" x", 1)[0]}', 1)
  return _host_available(), 'host memory available now', len(devices)


def _host_available() -> int | None:
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def estimate(model: nn.Module, params, image_shape: tuple, config, plan, devices,
             per_example_grads: str) -> MemoryEstimate:
  """Memory per device of a training step (module docstring). ``params``: abstract
  parameters (jax.ShapeDtypeStructs); ``plan``: the privacy plan (its batch size and
  privatizer)."""
  t = config.training
  ndev = len(devices)
  micro = int(t.micro_batch_size)
  if not micro:  # the whole per-device share of the padded batch
    micro = plan.batch_selection().capacity(ndev) // ndev
  # The views per example: augmult's, or the stored fixed views of the features.
  augmult = int(config.data.augmult) * features_lib.num_views(config)
  optimizer, _ = optimizers.make_optimizer(t, max(int(plan.steps), 1))
  param_bytes = _bytes(params)
  parts = {'parameters': param_bytes,
           'optimizer state': _bytes(jax.eval_shape(optimizer.init, params)),
           'EMA': param_bytes}
  try:  # BandMF keeps the last b-1 steps' noise
    parts['noise state'] = _bytes(jax.eval_shape(plan.privatizer().init, params))
  except Exception:  # pylint: disable=broad-except
    parts['noise state'] = 0
  parts['gradients'] = GRADIENT_COPIES * param_bytes
  if per_example_grads == 'ghost':  # one example's gradient of one layer at a time
    largest = max((_bytes(x) for x in jax.tree_util.tree_leaves(params)), default=0)
    parts['per-example gradients'] = 2 * largest
  else:  # 'vmap' and 'fast' hold every example's gradient of the micro-batch
    parts['per-example gradients'] = micro * param_bytes
  factor = ACTIVATION_FACTOR.get(per_example_grads, TAPE_ACTIVATION_FACTOR)
  parts['activations'] = (factor * micro * augmult
                          * activation_bytes(model, params, image_shape))
  available, where, sharing = available_memory(devices)
  return MemoryEstimate(parts, micro, augmult, tuple(image_shape), per_example_grads,
                        available, where, sharing)


def memory_warning(found: MemoryEstimate, config) -> str | None:
  """The warning line when the estimate exceeds what is available, else None."""
  if not found.exceeds:
    return None
  micro = config.training.micro_batch_size
  return (f'the run may not fit in memory: {found.describe()}. Lower '
          f'--config.training.micro_batch_size (now {micro}'
          + (f', i.e. the whole per-device batch of {found.micro_batch}' if not micro
             else '')
          + f', e.g. {_smaller(found.micro_batch)}: the same logical batch and the same '
          'privacy, more passes per step) or --config.data.image_size (a new run)'
          + (", or use --config.training.per_example_grads='ghost' (least memory)"
             if found.per_example_grads != 'ghost' else ''))


def _smaller(micro: int) -> int:
  return max(1, 2 ** int(np.floor(np.log2(max(micro, 2) / 4))))


# --------------------------------------------------------------------- errors
def _chain(error: BaseException):
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def kind_of(error: BaseException) -> str | None:
  """'memory', 'disk' or None: what ``error`` (or one it came from) ran out of."""
  for e in _chain(error):
    if isinstance(e, MemoryError):
      return 'memory'
    if 'RESOURCE_EXHAUSTED' in str(e) and type(e).__name__ in (
        'XlaRuntimeError', 'JaxRuntimeError'):
      return 'memory'
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return 'disk'
    if 'No space left on device' in str(e) or 'Disk quota exceeded' in str(e):
      return 'disk'
  return None


def remove_stray_files(workdir: str) -> list[str]:
  """Removes what unfinished writes leave: orbax's temporary checkpoint folders and
  temporary copies of run files (`.NAME.json.XXXXXXXX`, `*.tmp`) in the workdir and
  its export/ and selection/ folders. Returns the removed paths."""
  removed = checkpoint_store.remove_incomplete(workdir)
  for folder in (workdir, os.path.join(workdir, run_files.EXPORT),
                 os.path.join(workdir, run_files.SELECTION)):
    removed += run_files.remove_temporary(folder)
  return removed


def _first_line(error: BaseException) -> str:
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 200 else text[:200] + '...'


def message(kind: str, error: BaseException, config, workdir: str,
            dry_run: bool = False) -> str:
  """The one line for running out of ``kind`` ('memory' or 'disk')."""
  if dry_run and kind == 'memory':  # a dry run trains nothing: the data did not fit
    return (f'out of host memory during the dry run ({type(error).__name__}: '
            f'{_first_line(error)}), while loading the data: a dataset held in memory '
            f'is resized to config.data.image_size={config.data.image_size} for every '
            'image; lower it, or keep an image folder on disk '
            '(config.data.random_resized_crop=True). Nothing was written')
  steps = checkpoint_store.completed_steps(workdir)
  resume = (f'it resumes from the checkpoint of step {steps[-1]}' if steps
            else 'it starts again from step 0 (no checkpoint was complete)')
  if kind == 'disk':
    return (f'no space left on the disk of --workdir={workdir} ({_first_line(error)}): '
            f'free space there and run the same command again: {resume} (unfinished '
            'files were removed, the complete checkpoints kept)')
  micro = config.training.micro_batch_size
  where = 'host memory' if isinstance(error, MemoryError) else 'device memory'
  if isinstance(error, MemoryError) and not steps:
    # Before the first checkpoint the host's memory goes mostly to the data.
    where += (' (if it ran out while loading the data, which is held in host memory '
              f'at config.data.image_size={config.data.image_size}: lower that, or keep '
              'an image folder on disk with config.data.random_resized_crop=True)')
  return (f'out of {where} ({type(error).__name__}: {_first_line(error)}): run the '
          'same command with a lower --config.training.micro_batch_size (now '
          f'{micro}' + (', the whole per-device batch' if not micro else '')
          + f'; the same logical batch and privacy, more passes per step): {resume}. '
          'If it ran out while evaluating, lower --config.training.eval_batch_size; '
          'or lower --config.data.image_size (a new --workdir: the model changes). '
          'launch.py --dry_run estimates the memory per device')


def translate_errors(train):
  """Decorator for ``train(config, workdir, ...)``: running out of memory or disk
  raises ResourceError (one line, the fix), after removing unfinished files."""
  @functools.wraps(train)
  def wrapper(config, workdir, *args, **kwargs):
    dry_run = bool(kwargs.get('dry_run', args[0] if args else False))
    try:
      return train(config, workdir, *args, **kwargs)
    except ResourceError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (MemoryError included)
      kind = kind_of(e)
      if kind is None:
        raise
      if jax.process_index() == 0:
        remove_stray_files(workdir)
      raise ResourceError(message(kind, e, config, workdir, dry_run)) from e
  return wrapper


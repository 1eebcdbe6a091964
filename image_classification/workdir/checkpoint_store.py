"""The checkpoints of one workdir: the whole TrainState, written and verified with orbax.

Layout: WORKDIR/checkpoints/<step>/{state,metadata}. The metadata is what the caller
gives (workdir/resume.py decides what a resume checks) plus the state's checksum.

Privacy: a checkpoint is a release of the noisy iterate at its step, covered by the
epsilon its metadata records. BandMF's secret noise state is zeroed by the caller
before a save (``privatizers.publishable``); the mechanism's secret randomness is never
part of a checkpoint (workdir/secret_file.py keeps it).

Integrity: orbax writes each checkpoint into a temporary folder and renames it when
complete, so a killed run never leaves a half-written checkpoint under a step's name
(leftover temporary folders are removed). Each checkpoint also stores a SHA-256 of the
state's bytes; a restore checks it and that the restored step matches the metadata. A
latest checkpoint that fails is skipped (moved to WORKDIR/checkpoints_skipped/, with
the reason printed) and the previous one is used; if none is usable, ``CheckpointError``
names the folder. A run never silently starts over. Saves are synchronous: simple,
and the state's buffers are donated to the next step right after.
"""
import contextlib
import dataclasses
import hashlib
import os
import shutil
import sys
import threading
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from image_classification import config as config_lib
from image_classification.workdir import run_files

CHECKPOINTS = run_files.CHECKPOINTS
SKIPPED = 'checkpoints_skipped'
KEEP = 2  # at least 2, so that a corrupt latest checkpoint has a fallback

_TMP_MARKER = '.orbax-checkpoint-tmp'
# How long a failed save waits for each of orbax's writer threads to finish.
_WRITER_JOIN_SECONDS = 60.0


class CheckpointError(config_lib.ConfigError):
  """A workdir cannot be resumed; the message names the folder and what to do.

  A ConfigError, so launch.py reports it as a usage error, not a crash.
  """


@dataclasses.dataclass
class Restored:
  """A verified checkpoint: its step, the state and the metadata it was saved with."""
  step: int
  state: Any       # the TrainState (a nested dict when restored without a target)
  metadata: dict


# ---------------------------------------------------------------------- checksum
def _key_name(k) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _host_value(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.is_fully_replicated:
      raise NotImplementedError('checksums of arrays sharded across hosts')
    x = x.addressable_data(0)
  return np.asarray(jax.device_get(x))


def state_checksum(tree) -> str:
  """SHA-256 of every leaf's path, dtype, shape and bytes.

  Paths are reduced to key names, so a TrainState and the nested dict that a
  target-less restore returns give the same checksum.
  """
  leaves = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaves.append(('/'.join(_key_name(k) for k in path), leaf))
  h = hashlib.sha256()
  for name, leaf in sorted(leaves, key=lambda x: x[0]):
    value = np.ascontiguousarray(_host_value(leaf))
    h.update(f'{name}|{value.dtype.str}|{value.shape}|'.encode())
    h.update(value.tobytes())
  return h.hexdigest()


# ---------------------------------------------------------------------- folders
def remove_incomplete(workdir: str) -> list[str]:
  """Deletes orbax's temporary folders in WORKDIR/checkpoints (checkpoints whose
  writing never finished: a kill, a full disk); returns their paths."""
  directory = os.path.join(workdir, CHECKPOINTS)
  removed = []
  if os.path.isdir(directory):
    for name in sorted(os.listdir(directory)):
      if _TMP_MARKER in name:
        path = os.path.join(directory, name)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
  return removed


def completed_steps(workdir: str) -> list[int]:
  """The steps of WORKDIR/checkpoints' complete checkpoint folders (unverified;
  read without orbax, e.g. for a message)."""
  directory = os.path.join(workdir, CHECKPOINTS)
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


# ---------------------------------------------------------------------- manager
class Checkpoints:
  """The checkpoints of one workdir: WORKDIR/checkpoints/<step>/{state,metadata}."""

  def __init__(self, workdir: str, keep: int = KEEP, read_only: bool = False):
    """``read_only``: for readers beside a run that may still be writing (evaluate,
    predict): nothing is created, removed or saved."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.workdir = workdir
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINTS))
    self.keep = max(int(keep), 2)
    self.read_only = read_only
    if not read_only:
      self._remove_incomplete()
    self._manager = self._make_manager()

  def _make_manager(self):
    ocp = self._ocp
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=not self.read_only, read_only=self.read_only,
        enable_async_checkpointing=False)
    with _quiet_orbax():
      return ocp.CheckpointManager(self.directory, options=options)

  def _remove_incomplete(self) -> None:
    """Deletes orbax's temporary folders: checkpoints a killed run was writing."""
    if jax.process_index() == 0:
      for path in remove_incomplete(self.workdir):
        _say(f'checkpoint: removing {path}, a checkpoint the previous attempt was '
             'stopped while writing (never complete, never used)')
    _sync('checkpoint_remove_incomplete')

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state, metadata: dict) -> None:
    """Writes ``state`` at step ``metadata['step']`` (must equal state.step)."""
    ocp = self._ocp
    step = int(metadata['step'])
    if int(jax.device_get(state.step)) != step:
      raise ValueError(f'metadata step {step} != state.step {int(state.step)}')
    metadata = {**metadata, 'sha256': state_checksum(state)}
    try:
      with _quiet_orbax():
        saved = self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)))
    except BaseException:
      # A failed write (a full disk, Ctrl-C): let orbax's threads finish, then
      # remove the unfinished folder; the previous checkpoints stay as they were.
      self._abandon()
      raise
    if not saved:
      raise RuntimeError(f'orbax refused to save step {step} in {self.directory} '
                         f'(it holds steps {self.steps()})')

  def restore(self, step: int, target=None) -> Restored:
    """Restores and verifies one checkpoint; raises if it is unusable."""
    ocp = self._ocp
    restore_state = (ocp.args.StandardRestore(target) if target is not None
                     else ocp.args.StandardRestore())
    with _quiet_orbax():
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=restore_state, metadata=ocp.args.JsonRestore()))
    metadata, state = dict(out.metadata), out.state
    state_step = int(jax.device_get(state.step if target is not None
                                    else state['step']))
    if metadata.get('step') != step or state_step != step:
      raise ValueError(f'step mismatch: folder {step}, metadata {metadata.get("step")}, '
                       f'restored state {state_step}')
    checksum = state_checksum(state)
    if checksum != metadata.get('sha256'):
      raise ValueError(f'checksum mismatch: the state reads as sha256 '
                       f'{checksum[:12]}..., the metadata recorded '
                       f'{str(metadata.get("sha256"))[:12]}...')
    return Restored(step=step, state=state, metadata=metadata)

  def restore_latest(self, target=None) -> Restored | None:
    """The latest usable checkpoint, or None if there is none at all.

    Unusable newer checkpoints are moved to WORKDIR/checkpoints_skipped/ (so that the
    run can write those steps again) and reported. Raises CheckpointError when
    checkpoints exist but none can be restored.
    """
    steps = self.steps()
    failures = []
    for step in reversed(steps):
      try:
        restored = self.restore(step, target)
      except Exception as e:  # pylint: disable=broad-except
        _ignore_closed_loop_reports()
        reason = f'{type(e).__name__}: {_shorten(str(e))}'
        failures.append((step, reason))
        _say(f'checkpoint: skipping {os.path.join(self.directory, str(step))} '
             f'(step {step}): it cannot be restored ({reason})')
        continue
      if failures and not self.read_only:
        self._move_aside([s for s, _ in failures])
        _say(f'checkpoint: falling back to step {step} after skipping steps '
             f'{[s for s, _ in failures]}')
      return restored
    if failures:
      raise CheckpointError(
          f'no usable checkpoint in {self.directory}: '
          + '; '.join(f'step {s}: {_shorten(r, 160)}' for s, r in failures)
          + f'. The run will not start over by itself: delete {self.directory} (or the '
          f'whole workdir {self.workdir}) to train again from step 0, or use another '
          '--workdir.')
    return None

  def _move_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      dest_root = os.path.join(self.workdir, SKIPPED)
      os.makedirs(dest_root, exist_ok=True)
      stamp = time.strftime('%Y%m%d-%H%M%S')
      for step in steps:
        src = os.path.join(self.directory, str(step))
        dest = os.path.join(dest_root, f'{step}-{stamp}')
        shutil.move(src, dest)
        _say(f'checkpoint: moved the unusable checkpoint of step {step} to {dest}')
    _sync('checkpoint_move_aside')
    self.close()
    self._manager = self._make_manager()

  def _abandon(self) -> None:
    """After a failed save: closes the manager, waits for orbax's writer threads
    (they go on writing into the temporary folder after the error), removes the
    unfinished folder and opens a new manager."""
    _ignore_closed_loop_reports()
    with _quiet_orbax():
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except  (the save's error is raised)
        pass
      for thread in threading.enumerate():
        if (thread is not threading.current_thread()
            and type(thread).__module__.startswith('orbax')):
          thread.join(timeout=_WRITER_JOIN_SECONDS)
    if jax.process_index() == 0:
      remove_incomplete(self.workdir)
    self._manager = self._make_manager()

  def close(self) -> None:
    with _quiet_orbax():
      self._manager.close()


def _ignore_closed_loop_reports() -> None:
  """Silences one harmless report that follows a failed orbax restore.

  Reads that tensorstore still had in flight finish after orbax's event loop closed
  and each reports RuntimeError('Event loop is closed') through sys.unraisablehook,
  dozens of tracebacks that bury the one line saying which checkpoint was skipped.
  Other unraisable exceptions go to the previous hook.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'ignores_closed_loop', False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed':
      return
    previous(unraisable)

  hook.ignores_closed_loop = True
  sys.unraisablehook = hook


def _sync(name: str) -> None:
  """Waits for every host (file operations run on host 0 only)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def _quiet_orbax():
  """orbax logs dozens of INFO lines per save; keep them out of the console."""
  level = logging.get_verbosity()
  if level <= logging.INFO:
    logging.set_verbosity(logging.WARNING)
  try:
    yield
  finally:
    logging.set_verbosity(level)


def _shorten(text: str, limit: int = 300) -> str:
  text = ' '.join(text.split())
  return text if len(text) <= limit else text[:limit] + '...'


def _say(message: str) -> None:
  """Printed (the console is where a user looks) and logged."""
  logging.info('%s', message)
  if jax.process_index() == 0:
    print(message, flush=True)

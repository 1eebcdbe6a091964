"""Best-on-validation (config.training.select_on_validation): of the run's evaluations,
keep the parameters with the best validation accuracy and export those.

Each evaluation that beats the best validation accuracy so far (strictly: ties keep
the earlier step) writes its evaluated parameters (EMA where used) to
WORKDIR/selection/step_<S>.msgpack and its accuracies to WORKDIR/selection/
selection.json. A resume from step R forgets what came after R (those steps are
redone, like their metrics rows); after each checkpoint, files that no restorable
checkpoint can need are deleted. When the run completes, the best is exported
(trained/inference.py) and the folder is removed.

Privacy: with respect to the training split, choosing one of the iterates is
post-processing of the noisy iterates, which the accountant charges as if every one
were released (DP-SGD's accounting composes all steps): it costs no privacy, and the
run's final epsilon covers the exported parameters. But the validation accuracy that makes the choice is computed on private
held-out data WITHOUT noise, so the choice, the selected step and that accuracy are
not covered by the guarantee for the validation records; privacy.json lists them
under computed_without_noise and privacy.md says so.
"""
import os
import shutil

import flax.serialization
import jax
import numpy as np

from image_classification.workdir import run_files

FOLDER = run_files.SELECTION
RECORD = 'selection.json'


def _file(step: int) -> str:
  return f'step_{int(step)}.msgpack'


class Selection:
  """The improvements of one run's validation accuracy and their parameters."""

  def __init__(self, workdir: str, resumed_step: int | None, writer: bool = True):
    """``resumed_step``: the step of the restored checkpoint (None: a fresh start,
    which forgets any earlier attempt's files). Only the ``writer`` writes files."""
    self.folder = os.path.join(workdir, FOLDER)
    self.writer = writer
    self.improvements = []  # [{step, validation_accuracy, test_accuracy}], by step
    if os.path.exists(os.path.join(self.folder, RECORD)):
      self.improvements = run_files.read_json(self.folder, RECORD)['improvements']
    keep = resumed_step if resumed_step is not None else -1
    dropped = [r for r in self.improvements if r['step'] > keep]
    self.improvements = [r for r in self.improvements if r['step'] <= keep]
    if dropped and writer:
      for r in dropped:
        self._remove(r['step'])
      self._write_record()

  @property
  def best(self) -> dict | None:
    return self.improvements[-1] if self.improvements else None

  def offer(self, step: int, params, accuracies: dict) -> bool:
    """Keeps ``params`` if their validation accuracy beats the best so far."""
    accuracy = float(accuracies['validation_accuracy'])
    if self.best is not None and step <= self.best['step']:
      return False  # already offered (a resume of the final evaluation)
    if self.best is not None and not accuracy > self.best['validation_accuracy']:
      return False
    host = jax.tree_util.tree_map(_host, params)
    self.improvements.append({'step': int(step), 'validation_accuracy': accuracy,
                              'test_accuracy': accuracies.get('test_accuracy')})
    if self.writer:
      os.makedirs(self.folder, exist_ok=True)
      path = os.path.join(self.folder, _file(step))
      with open(path + '.tmp', 'wb') as f:
        f.write(flax.serialization.msgpack_serialize(host))
      os.replace(path + '.tmp', path)
      self._write_record()
    return True

  def params(self):
    """The best parameters (host numpy pytree)."""
    with open(os.path.join(self.folder, _file(self.best['step'])), 'rb') as f:
      return flax.serialization.msgpack_restore(f.read())

  def prune(self, checkpoint_steps: list[int]) -> None:
    """Deletes the files no resume can need: a resume restores one of
    ``checkpoint_steps`` (or a later one) and needs only the best up to it."""
    if not checkpoint_steps or not self.writer:
      return
    oldest = min(checkpoint_steps)
    needed = [r['step'] for r in self.improvements if r['step'] <= oldest]
    if len(needed) < 2:
      return
    for step in needed[:-1]:
      self._remove(step)
    self.improvements = [r for r in self.improvements if r['step'] >= needed[-1]]
    self._write_record()

  def discard(self) -> None:
    """The run is complete and the best is exported: nothing more is needed."""
    if self.writer:
      shutil.rmtree(self.folder, ignore_errors=True)

  def _remove(self, step: int) -> None:
    try:
      os.remove(os.path.join(self.folder, _file(step)))
    except FileNotFoundError:
      pass

  def _write_record(self) -> None:
    run_files.write_json(self.folder, RECORD, {'improvements': self.improvements})


def _host(x):
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = x.addressable_data(0)  # replicated parameters: any copy is the value
  return np.asarray(jax.device_get(x))

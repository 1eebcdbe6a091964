"""Protecting long runs: stop on a signal with a checkpoint, checkpoint by wall-clock
time, and count the wall time of every segment of a resumed run.

``RunControl`` is what the training loop holds while it steps:

* SIGINT (Ctrl-C) and SIGTERM (what schedulers and ``kill`` send) no longer kill the
  process mid-step (image_classification/stop_signals.py records them). After a signal
  the loop finishes the step it is in, saves a checkpoint, writes the run files it has
  and raises ``Stopped``, which launch.py turns into a message saying how to resume
  and exit status 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), so
  that a script can tell a stopped run from a finished one. A signal that came before
  the steps (while the data loaded, during the imports) is acted on the same way at
  the first safe point: ``stop_if_requested``. A second Ctrl-C stops at once
  (KeyboardInterrupt), losing the steps since the last checkpoint.
* ``checkpoint_due()`` is true every ``config.training.checkpoint_every_minutes`` of
  wall time, so a killed run (SIGKILL, a power cut, a preempted machine that sends no
  signal) loses at most that much work.
* ``WallClock`` keeps WORKDIR/wall_time.json: one entry per segment (a start or a
  resume of the same workdir) with its seconds and steps, so that a resumed run
  reports the total as well as the last segment.

Privacy: nothing here touches the mechanism. A checkpoint saved on a signal is the
same kind of release as any other checkpoint (the noisy iterate at its step, covered
by the epsilon in its metadata), and a resume continues the ledger from it.

Several processes: the decision to checkpoint or stop must be the same on every
process (a checkpoint is a collective write), so it is taken on process 0 and
broadcast at every step when ``jax.process_count() > 1``.
"""
import contextlib
import math
import signal
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from image_classification.workdir import run_files
from image_classification import stop_signals



def _now() -> float:
  """The checkpoint timer's clock (a function, so that tests can advance it)."""
  return time.monotonic()


class Stopped(BaseException):
  """Training stopped on a signal after saving a checkpoint.

  A BaseException (like KeyboardInterrupt): code that catches Exception to go on
  with other work, such as a sweep's next point, must stop too.
  """

  def __init__(self, signum: int, step: int, total_steps: int, message: str):
    super().__init__(message)
    self.signum = signum
    self.step = step
    self.total_steps = total_steps
    self.message = message

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def resume_command() -> str:
  """The command line of this process, to paste again to resume."""
  return stop_signals.command_line()


class WallClock:
  """Wall time per segment of a run, kept in WORKDIR/wall_time.json (process 0).

  A segment is one process working on the workdir, from its start to its last
  ``update``. Time spent on steps that a hard kill (SIGKILL) made the next segment
  redo is counted: it was spent. The file is rewritten at every checkpoint and at the
  end, and on logged steps at most every ``WRITE_EVERY_SEC``; a kill loses at most the
  time since the last write.
  """

  WRITE_EVERY_SEC = 10.0

  def __init__(self, workdir: str, start_step: int, start_time: float | None = None):
    self.workdir = workdir
    self.start = time.time() if start_time is None else start_time
    self._writer = jax.process_index() == 0
    try:
      previous = run_files.read_json(workdir, run_files.WALL_TIME).get('segments', [])
    except (OSError, ValueError, AttributeError):
      previous = []
    self.previous = [s for s in previous if isinstance(s, dict)]
    self.segment = {'started': time.strftime('%Y-%m-%d %H:%M:%S',
                                             time.localtime(self.start)),
                    'from_step': int(start_step), 'to_step': int(start_step),
                    'seconds': 0.0}
    self._written = -math.inf

  def update(self, step: int, force: bool = True) -> None:
    """Records the segment up to ``step``; ``force=False``: only if a write is due."""
    self.segment.update(to_step=int(step), seconds=self.last_segment())
    if not force and time.time() - self._written < self.WRITE_EVERY_SEC:
      return
    self._written = time.time()
    if self._writer:
      run_files.write_json(self.workdir, run_files.WALL_TIME,
                           {'segments': self.previous + [self.segment],
                            'total_seconds': self.total()})

  def last_segment(self) -> float:
    return time.time() - self.start

  def total(self) -> float:
    return sum(float(s.get('seconds', 0.0)) for s in self.previous) + \
        self.last_segment()

  @property
  def num_segments(self) -> int:
    return len(self.previous) + 1


class RunControl:
  """Signals and the checkpoint timer, as a context manager around the steps.

  Usage (training/loop.py)::

    with run_control.RunControl(minutes) as control:
      while step < total:
        ...one step...
        if control.checkpoint_due() or control.stop_requested(): save a checkpoint
        if control.stop_requested(): raise control.stopped(step, total, where)
  """

  def __init__(self, checkpoint_every_minutes: float = 0.0):
    minutes = float(checkpoint_every_minutes or 0.0)
    self.interval = minutes * 60.0 if minutes > 0 else math.inf
    self._last_checkpoint = _now()
    self._signals = contextlib.ExitStack()

  # ------------------------------------------------------------------ signals
  def __enter__(self):
    self._signals.enter_context(stop_signals.deferred())
    return self

  def __exit__(self, *exc):
    return self._signals.__exit__(*exc)

  @property
  def signum(self) -> int | None:
    """The signal that asked for the stop (None: none yet)."""
    return stop_signals.received()

  def stop_requested(self) -> bool:
    return _agree(self.signum is not None)

  def stopped(self, step: int, total_steps: int, checkpoint_dir: str) -> Stopped:
    signum = self.signum or signal.SIGTERM
    message = (f'stopped by {signal.Signals(signum).name} at step {step} of '
               f'{total_steps}; checkpoint saved in {checkpoint_dir}. To resume, run '
               f'the same command again:\n  {resume_command()}')
    return Stopped(signum, step, total_steps, message)

  # ------------------------------------------------------------------ timer
  def checkpoint_due(self) -> bool:
    """True when checkpoint_every_minutes have passed since the last checkpoint."""
    if not math.isfinite(self.interval):
      return False
    return _agree(_now() - self._last_checkpoint >= self.interval)

  def checkpoint_saved(self) -> None:
    self._last_checkpoint = _now()


def stop_if_requested(when: str, saved: str, step: int = 0,
                      total_steps: int = 0) -> None:
  """At a safe point outside the steps (before the first, after the last): raises
  ``Stopped`` when a SIGINT / SIGTERM has come. The message reads 'stopped by SIGINT
  {when}; {saved}. To go on, run the same command again: ...', e.g. when='before the
  first step', saved='nothing was trained in this attempt, so nothing was saved'.

  Every process of a job calls it at the same points (process 0's signal decides).
  """
  signum = stop_signals.received()
  if not _agree(signum is not None):
    return
  signum = signum or signal.SIGTERM
  raise Stopped(signum, step, total_steps,
                f'stopped by {signal.Signals(signum).name} {when}; {saved}. To go '
                f'on, run the same command again:\n  {resume_command()}')


def _agree(flag: bool) -> bool:
  """Process 0's value of ``flag`` on every process (itself with one process)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))

"""One sweep point as one job: train it in its folder and record the job's state there.

Whatever runs the point (the sequential runner, a submitit job on Slurm or on this
machine, or ``--sweep_point=i`` under another scheduler), it goes through
``run_point``, which leaves in the point's folder:

- ``sweep_job.json``: the job's state ('running', then 'complete', 'failed' or
  'stopped'), who runs it (executor, job id, host, pid) and when; the sweep table
  reads it to tell a running point from a stopped or failed one;
- ``sweep_error.txt``: the traceback of a failure (removed when the point is started
  again).

A point is resumable: running it again resumes its workdir from the last checkpoint
(training/loop.py), and a complete one is not trained again.

Privacy: the point trains through ``train_fn`` in its own folder, so it draws its own
secret there (workdir/secret_file.py); the job and these records hold the point's
config and folder, never the secret nor anything derived from it.
"""
import os
import socket
import time
import traceback
from typing import Any, Callable, Optional

import jax
import ml_collections

from image_classification.training import distributed
from image_classification.workdir import lock as workdir_lock
from image_classification.workdir import run_files

TrainFn = Callable[[ml_collections.ConfigDict, str], Any]

RUNNING, COMPLETE, FAILED, STOPPED = 'running', 'complete', 'failed', 'stopped'


def read_record(point_dir: str) -> Optional[dict[str, Any]]:
  """The point's sweep_job.json, or None (never started by a job, or unreadable)."""
  try:
    return run_files.read_json(point_dir, run_files.SWEEP_JOB)
  except run_files.RunFileError:
    return None


def _record(point_dir: str, record: dict[str, Any], **changes) -> dict[str, Any]:
  record = {**record, **changes}
  if jax.process_index() == 0:  # one writer in a multi-process point
    run_files.write_json(point_dir, run_files.SWEEP_JOB, record)
  return record


def _now() -> str:
  return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())


def run_point(config: ml_collections.ConfigDict, point_dir: str, train_fn: TrainFn, *,
              executor: str, job_id: Optional[str] = None) -> Any:
  """Trains (or resumes) one point in ``point_dir`` with ``train_fn(config, point_dir)``.

  Returns what ``train_fn`` returns (summary.json's content). An Exception leaves its
  traceback in sweep_error.txt and the state 'failed', and is raised again; a stop
  (Ctrl-C, SIGTERM: run_control.Stopped, or the scheduler's own exit) leaves 'stopped'.
  """
  # The point's folder is locked before its job record is touched: a second job of
  # the same point fails here and leaves the running one's record as it is.
  with workdir_lock.held(point_dir, writer=distributed.is_writer(),
                         agree=distributed.broadcast_from_writer):
    return _run_point(config, point_dir, train_fn, executor=executor, job_id=job_id)


def _run_point(config, point_dir, train_fn, *, executor, job_id):
  error_file = os.path.join(point_dir, run_files.SWEEP_ERROR)
  if jax.process_index() == 0 and os.path.exists(error_file):
    os.remove(error_file)  # an earlier attempt's; this one writes its own
  record = _record(point_dir, {}, state=RUNNING, executor=executor, job_id=job_id,
                   host=socket.gethostname(), pid=os.getpid(), started=_now(), ended=None)
  try:
    result = train_fn(config, point_dir)
  except Exception as e:  # pylint: disable=broad-except
    if jax.process_index() == 0:
      with open(error_file, 'w') as f:
        f.write(traceback.format_exc())
    _record(point_dir, record, state=FAILED, ended=_now(),
            error=f'{type(e).__name__}: {e}'[:500])
    raise
  except BaseException:
    _record(point_dir, record, state=STOPPED, ended=_now())
    raise
  _record(point_dir, record, state=COMPLETE, ended=_now())
  return result


def process_is_alive(record: dict[str, Any]) -> Optional[bool]:
  """Whether the record's process still runs: known only on the host that runs it."""
  if record.get('host') != socket.gethostname() or not record.get('pid'):
    return None
  try:
    os.kill(int(record['pid']), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, OverflowError):
    return None
  return True

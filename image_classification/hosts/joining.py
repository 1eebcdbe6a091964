"""Joining a multi-process job: ``initialize`` (jax.distributed) within a bounded time,
with a message that names the process and the cause, then a check that every process
was told the same number of processes. Which scheduler ``--distributed`` joins is
schedulers.py's; the collectives a run uses once joined are training/distributed.py's.
"""
import os
import socket
import sys
import threading

import jax
from jax.experimental import multihost_utils
import numpy as np

from image_classification.hosts import schedulers

DEFAULT_TIMEOUT_S = 120


def _reachable(address: str, timeout: float = 2.0) -> bool:
  host, _, port = address.rpartition(':')
  try:
    with socket.create_connection((host.strip('[]') or 'localhost', int(port)), timeout):
      return True
  except (OSError, ValueError):
    return False


def _timeout_message(address, num_processes, process_id, timeout_s) -> str:
  who = f'process {process_id}' if process_id is not None else 'this process'
  if address is None:
    return (f'error: {who} could not join the auto-detected multi-process job within '
            f'{timeout_s:g} s (--distributed_timeout): check that every process of the '
            'job was started and that the coordinator is reachable')
  if process_id == 0:
    return (f'error: process 0 (the coordinator, at {address}) waited {timeout_s:g} s '
            f'(--distributed_timeout) for the {num_processes} processes of '
            f'--num_processes={num_processes} to join, and not all did: start every '
            f'process with the same --coordinator_address={address} and '
            f'--num_processes={num_processes}, and --process_id from 0 to '
            f'{num_processes - 1}')
  if not _reachable(address):
    return (f'error: process {process_id} cannot reach the coordinator at {address} '
            f'within {timeout_s:g} s (--distributed_timeout): nothing answers there. '
            'Start process 0 (which runs the coordinator) on that host and port, or fix '
            '--coordinator_address')
  return (f'error: process {process_id} reached the coordinator at {address} but the '
          f'job did not start within {timeout_s:g} s (--distributed_timeout): not every '
          f'process joined, or they disagree on --num_processes (this one has '
          f'{num_processes}); start all with the same --num_processes and distinct '
          '--process_id')


_VISIBLE_DEVICE_OPTIONS = ('jax_cuda_visible_devices', 'jax_rocm_visible_devices')


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
  """Joins a multi-process job; returns False (and does nothing) for a single process.

  Explicit: all of ``coordinator_address`` (HOST:PORT), ``num_processes`` and
  ``process_id``. ``auto``: ``jax.distributed.initialize()`` detects the cluster
  (SLURM, Kubernetes/GKE, Cloud TPU); given values override what it detects. Without
  a cluster to detect (``detect_scheduler``), ``auto`` is a DistributedError that says
  so, before jax is asked.

  Bounded time: when the job has not started after ``timeout_s`` (the coordinator is
  unreachable, a process is missing, the processes disagree on num_processes), the
  process prints why and exits with status 2. jax's own timeout would abort the
  process with a C++ stack trace, so it is set beyond ours. ``timeout_s`` is also the
  heartbeat timeout: once training, a process that dies is noticed by the others
  within about that time (they stop too; re-running the same command resumes).
  Must run before anything touches jax's backends (jax.devices()).
  """
  explicit = (coordinator_address, num_processes, process_id)
  if not auto and all(v is None for v in explicit):
    return False
  if not auto and any(v is None for v in explicit):
    missing = [n for n, v in zip(('--coordinator_address', '--num_processes',
                                  '--process_id'), explicit) if v is None]
    raise schedulers.DistributedError(
        f'a multi-process job needs --coordinator_address, --num_processes and '
        f'--process_id together (missing {", ".join(missing)}), or --distributed alone '
        'to let jax.distributed detect the cluster (SLURM, Kubernetes, Cloud TPU)')
  if num_processes is not None and num_processes < 1:
    raise schedulers.DistributedError(f'--num_processes={num_processes}: must be at least 1')
  if (process_id is not None and num_processes is not None
      and not 0 <= process_id < num_processes):
    raise schedulers.DistributedError(f'--process_id={process_id}: must be in 0..{num_processes - 1} '
                           f'for --num_processes={num_processes}')
  if timeout_s <= 0:
    raise schedulers.DistributedError(f'--distributed_timeout={timeout_s}: must be positive seconds')
  scheduler = None
  if auto and any(v is None for v in explicit):
    scheduler = schedulers.detect_scheduler()
  keep_gpus = scheduler is not None and schedulers.keeps_every_local_gpu(scheduler)
  visible = {name: jax.config.values.get(name) for name in _VISIBLE_DEVICE_OPTIONS}
  # On the CPU the cross-process collectives are gloo's (no-op for GPU/TPU backends).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')

  def give_up():
    print(_timeout_message(coordinator_address, num_processes, process_id, timeout_s),
          file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access  # the main thread is stuck in C++

  watchdog = threading.Timer(timeout_s, give_up)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes,
        process_id=process_id, initialization_timeout=int(timeout_s) + 60,
        heartbeat_timeout_seconds=max(int(timeout_s), 10))
    if keep_gpus:  # one task per node: not only the GPU numbered SLURM_LOCALID
      for name, value in visible.items():
        jax.config.update(name, value)
    # The processes must agree on how many they are: a process given another
    # --num_processes than the coordinator's would otherwise join silently.
    told = np.asarray(multihost_utils.process_allgather(
        np.asarray([num_processes if num_processes is not None else -1,
                    jax.process_index()], np.int64), tiled=False))
  except (RuntimeError, ValueError) as e:
    raise schedulers.DistributedError(
        f'{"process " + str(process_id) if process_id is not None else "this process"} '
        f'could not join the multi-process job: {e}') from e
  finally:
    watchdog.cancel()
  count = jax.process_count()
  wrong = [(int(i), int(n)) for n, i in told if n not in (-1, count)]
  if wrong:
    raise schedulers.DistributedError(
        f'process {jax.process_index()}: the job has {count} processes (the '
        f'coordinator\'s --num_processes), but process(es) '
        + ', '.join(f'{i} (--num_processes={n})' for i, n in wrong)
        + ' were told otherwise: start every process with the same --num_processes')
  if jax.process_index() == 0:
    print(f'joined a job of {count} process{"es" if count != 1 else ""}'
          + (f' (detected from {scheduler})' if scheduler else '')
          + (', every GPU of each node visible to its one process' if keep_gpus else ''),
          flush=True)
  return True

"""Sweeps on a cluster: each point a scheduler job (submitit), one point alone, and the
table while jobs run.

  --sweep_executor=slurm  one Slurm job array through submitit, a task per point to
                          run; launch.py returns once it is submitted
  --sweep_executor=local  the points as submitit jobs on this machine
                          (--sweep_parallelism at a time); launch.py waits for them
                          and writes the table, like the sequential sweep
  --sweep_point=I         point I (0-based) alone, in this process: for any other
                          scheduler (e.g. --sweep_point=$SLURM_ARRAY_TASK_ID)
  --report_only           sweep.csv/.md/.png now, from the points' folders and jobs
                          (running, submitted, stopped, failed, missing points marked)

As in the sequential sweep (runner.py): every unfinished point's config is checked
before anything is submitted (one bad point: SweepError, exit status 2, nothing
submitted), and a complete point is skipped. A point whose job is still queued or
running is not submitted again; any other point is, and resumes its folder. A Slurm
task that reaches its time limit is requeued by submitit and resumes from the point's
last checkpoint. Resources: sweeps/resources.py. Job logs and submitit's pickles:
WORKDIR/submitit.

Privacy: a job holds the point's config (public), its folder and the name of the
training function. The point's secret is drawn by the job itself, in the point's own
folder, when it starts training (workdir/secret_file.py), so no two points share
one and none is ever pickled; a job returns summary.json's content. Nothing in
WORKDIR/submitit (pickled jobs, results, logs) holds a secret or a batch's indices
(tests/sweeps/test_cluster.py searches it after a sweep).
"""
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Mapping, Optional, Sequence

import jax
import ml_collections
import submitit

from image_classification.workdir import run_files
from image_classification import runs
from image_classification.reporting import progress
from image_classification.reporting import report
from image_classification.sweeps import point_job
from image_classification.sweeps import resources as resources_lib
from image_classification.sweeps.overrides import apply_overrides
from image_classification.sweeps.points import point_name
from image_classification.sweeps.points import SweepError
from image_classification.sweeps.runner import check_points
from image_classification.sweeps.runner import CheckFn
from image_classification.sweeps.runner import run_sweep
from image_classification.sweeps.runner import TrainFn
from image_classification.sweeps.runner import write_sweep_json
from image_classification.sweeps.summary import point_status
from image_classification.sweeps.summary import read_submitted
from image_classification.sweeps.summary import summarize_sweep
from image_classification.sweeps.sweep_file import load_resources
from image_classification.sweeps.sweep_file import load_sweep

EXECUTORS = ('sequential', 'local', 'slurm')
# Slurm states of a job that still waits or runs (sacct's State column).
_LIVE_SLURM_STATES = ('PENDING', 'RUNNING', 'REQUEUED', 'CONFIGURING', 'COMPLETING',
                      'SUSPENDED', 'RESIZING', 'REQUEUE_HOLD', 'REQUEUE_FED', 'PREEMPTED')
# What launch.py set in this process's JAX config that a point's job must set too.
_JAX_OPTIONS = ('jax_enable_compilation_cache', 'jax_compilation_cache_dir',
                'jax_persistent_cache_min_compile_time_secs')
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_A_YEAR_IN_MINUTES = 365 * 24 * 60
POLL_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Options:
  """launch.py's --sweep_executor, --sweep_point, --report_only and resource flags."""
  executor: str = 'sequential'
  point: Optional[int] = None
  report_only: bool = False
  print_only: bool = False
  resource_flags: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def options_from_flags(executor: str, point: Optional[int], report_only: bool,
                       print_only: bool = False, **resource_flags) -> Options:
  """Options from launch.py's flag values; ``resource_flags`` by resources.FLAGS key,
  'slurm' as the raw --sweep_slurm list."""
  if executor not in EXECUTORS:
    raise SweepError(f'--sweep_executor={executor}: choose one of {list(EXECUTORS)}')
  chosen = [f for f, on in (('--sweep_executor=' + executor, executor != 'sequential'),
                            (f'--sweep_point={point}', point is not None),
                            ('--report_only', report_only),
                            ('--print_only', print_only)) if on]
  if len(chosen) > 1:
    raise SweepError(f'{" and ".join(chosen)} do not go together: choose one')
  flags = dict(resource_flags)
  flags['slurm'] = resources_lib.parse_slurm_flag(flags.get('slurm'))
  return Options(executor, point, report_only, print_only, flags)


# ---------------------------------------------------------------------- the job
class PointJob(submitit.helpers.Checkpointable):
  """What submitit pickles and runs for one point: ``point_job.run_point`` in the
  point's folder. Checkpointable: a Slurm task at its time limit is requeued with
  this same job, which resumes the folder from its last checkpoint."""

  def __init__(self, config: ml_collections.ConfigDict, point_dir: str,
               train_fn: TrainFn, executor: str, jax_options: Mapping[str, Any]):
    self.config = config
    self.point_dir = point_dir
    self.train_fn = train_fn
    self.executor = executor
    self.jax_options = dict(jax_options)

  def __call__(self) -> Any:
    for name, value in self.jax_options.items():
      jax.config.update(name, value)
    progress.quiet_library_logs()
    return point_job.run_point(self.config, self.point_dir, self.train_fn,
                               executor=self.executor,
                               job_id=submitit.JobEnvironment().job_id)


def _jax_options() -> dict[str, Any]:
  return {name: jax.config.values[name] for name in _JAX_OPTIONS
          if name in jax.config.values}


def liveness(folder: str):
  """Whether a job (a sweep_job.json record or a sweep_jobs.json entry) still waits or
  runs: Slurm's answer (sacct) for a Slurm job, the process on this host otherwise;
  None when it cannot be known."""
  logging.getLogger('submitit').setLevel(logging.ERROR)  # no sacct here: no warning

  def live(job: Mapping[str, Any]) -> Optional[bool]:
    if job.get('executor') == 'slurm' and job.get('job_id'):
      try:
        state = str(submitit.SlurmJob(folder, str(job['job_id'])).state).upper()
      except Exception:  # pylint: disable=broad-except
        return None
      state = state.split()[0] if state.split() else 'UNKNOWN'
      if state == 'UNKNOWN':
        return None
      return state in _LIVE_SLURM_STATES
    return point_job.process_is_alive(job)
  return live


# ---------------------------------------------------------------------- submission
@contextlib.contextmanager
def _environment(**changes: Optional[str]):
  """os.environ with ``changes`` (None: unset) inside the block, as it was after."""
  old = {k: os.environ.get(k) for k in changes}
  try:
    for k, v in changes.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def _importable_here():
  """Jobs inherit this environment (local, and sbatch's default --export=ALL): the
  package must import in them whatever their working directory."""
  path = os.environ.get('PYTHONPATH')
  return _environment(PYTHONPATH=_REPO_ROOT + (os.pathsep + path if path else ''))


def _memory(gb: Optional[float]) -> Optional[str]:
  """Slurm's --mem: whole GB, else MB (it takes no decimals)."""
  if not gb:
    return None
  return f'{int(gb)}GB' if float(gb).is_integer() else f'{int(gb * 1024)}MB'


def _executor(kind: str, folder: str, res: resources_lib.Resources, num_jobs: int,
              name: str):
  """A submitit executor for ``kind`` with the points' resources."""
  if kind == 'slurm':
    try:
      executor = submitit.SlurmExecutor(folder, max_num_timeout=3)
    except RuntimeError as e:  # submitit's 'Could not detect "srun"'
      raise SweepError(f'--sweep_executor=slurm: {e} (run the sweep from a Slurm '
                       'login node, or use --sweep_executor=local)') from e
    params = {'job_name': name, 'nodes': 1, 'ntasks_per_node': 1,
              'time': res['time_minutes'],
              'array_parallelism': min(res['parallelism'] or num_jobs, num_jobs)}
    optional = {'partition': res['partition'], 'cpus_per_task': res['cpus'],
                'gpus_per_node': res['gpus'] or None, 'mem': _memory(res['mem_gb']),
                'setup': res['setup'], 'additional_parameters': res['slurm'] or None}
    params.update({k: v for k, v in optional.items() if v is not None})
  else:
    executor = submitit.LocalExecutor(folder, max_num_timeout=3)
    params = {'timeout_min': res['time_minutes'] or _A_YEAR_IN_MINUTES}
    setup = list(res['setup'] or [])
    if res['gpus'] is not None:
      params['gpus_per_node'] = res['gpus']  # CUDA_VISIBLE_DEVICES=0..gpus-1
    else:  # keep the GPUs this process sees (submitit would hide them all)
      visible = os.environ.get('CUDA_VISIBLE_DEVICES')
      setup.insert(0, 'unset CUDA_VISIBLE_DEVICES' if visible is None else
                   f'export CUDA_VISIBLE_DEVICES={visible}')
    params['setup'] = setup
  executor.update_parameters(**params)
  return executor


def _record_jobs(workdir: str, jobs: Mapping[str, Mapping[str, Any]]) -> None:
  """Adds ``jobs`` (point name -> job) to sweep_jobs.json."""
  submitted = read_submitted(workdir)
  submitted.update(jobs)
  run_files.write_json(workdir, run_files.SWEEP_JOBS, {'points': submitted})


def _job_entry(kind: str, job) -> dict[str, Any]:
  entry = {'executor': kind, 'job_id': str(job.job_id),
           'submitted': time.strftime('%Y-%m-%d %H:%M:%S')}
  if kind == 'local':  # the job's controller process, on this host
    entry.update(host=socket.gethostname(), pid=int(job.job_id))
  return entry


def _to_run(workdir: str, points, names, live) -> tuple[list, dict[str, str]]:
  """The (point, name) pairs to submit, and the others' reasons (complete, queued...)."""
  submitted = read_submitted(workdir)
  todo, skipped = [], {}
  for point, name in zip(points, names):
    status, _ = point_status(os.path.join(workdir, name), None, submitted.get(name), live)
    if status in ('complete', 'running', 'submitted'):
      skipped[name] = status
    else:
      todo.append((point, name))
  return todo, skipped


def _wait_for_local_jobs(executor, workdir: str, todo, make_job, parallelism: int,
                         folder: str) -> dict[str, str]:
  """Runs the local jobs ``parallelism`` at a time; returns point name -> error."""
  pending, running, errors = list(todo), [], {}
  try:
    while pending or running:
      while pending and len(running) < parallelism:
        point, name = pending.pop(0)
        with _importable_here():
          job = executor.submit(make_job(point, name))
        _record_jobs(workdir, {name: _job_entry('local', job)})
        print(f'point {name}: started as local job {job.job_id} (log: '
              f'{job.paths.stdout})', flush=True)
        running.append((name, job))
      time.sleep(POLL_SECONDS)
      still = []
      for name, job in running:
        if not job.done():
          still.append((name, job))
          continue
        status, error = point_status(os.path.join(workdir, name),
                                     liveness=liveness(folder))
        if status == 'failed':
          errors[name] = error
        print(f'point {name}: {status}' + (f' ({error})' if error else ''), flush=True)
      running = still
  except KeyboardInterrupt:
    # Ctrl-C reached the jobs too: each saves a checkpoint and stops (or is stopped).
    for _, job in running:
      with contextlib.suppress(Exception):
        job._process.send_signal(signal.SIGTERM)  # pylint: disable=protected-access
    deadline = time.time() + 60
    while time.time() < deadline and any(not j.done() for _, j in running):
      time.sleep(POLL_SECONDS)
    raise
  return errors


def submit(config: ml_collections.ConfigDict, sweep_path: str, workdir: str,
           kind: str, resource_flags: Mapping[str, Any],
           train_fn: TrainFn = runs.train,
           check_fn: Optional[CheckFn] = runs.check,
           report_command: Optional[str] = None) -> list[dict[str, Any]]:
  """Submits the sweep's unfinished points as ``kind`` ('slurm' or 'local') jobs.

  Local: waits for them and returns the table's rows. Slurm: returns the rows as
  submitted (a later --report_only gathers the results).

  Raises:
    SweepError: a bad point, a bad resource or no Slurm here, before any job is
      submitted.
  """
  points = load_sweep(sweep_path, config)
  names = [point_name(p) for p in points]
  res = resources_lib.resolve(resource_flags, load_resources(sweep_path), sweep_path,
                              kind)
  if check_fn is not None:
    # On a GPU, a backend this process opens for the checks must leave the memory to
    # the points' jobs.
    with _environment(XLA_PYTHON_CLIENT_PREALLOCATE=os.environ.get(
        'XLA_PYTHON_CLIENT_PREALLOCATE', 'false')):
      check_points(config, points, names, check_fn, workdir=workdir)
  folder = os.path.join(workdir, run_files.SWEEP_SUBMITIT)
  live = liveness(folder)
  todo, skipped = _to_run(workdir, points, names, live)
  write_sweep_json(workdir, sweep_path, points, names)
  for name, why in skipped.items():
    print(f'point {name}: {why}, not submitted', flush=True)
  options = _jax_options()

  def make_job(point, name):
    return PointJob(apply_overrides(config, point), os.path.join(workdir, name),
                    train_fn, kind, options)

  if not todo:
    print('nothing to submit: every point is complete, queued or running', flush=True)
    return summarize_sweep(workdir, points, liveness=live)
  print(f'resources per point: {resources_lib.describe(res)}', flush=True)
  executor = _executor(kind, folder, res, len(todo),
                       name=os.path.basename(os.path.normpath(workdir)) or 'sweep')
  if kind == 'local':
    errors = _wait_for_local_jobs(executor, workdir, todo, make_job,
                                  res['parallelism'], folder)
    return summarize_sweep(workdir, points, errors, liveness=live)
  with _importable_here():
    jobs = executor.submit_array([make_job(p, n) for p, n in todo])
  _record_jobs(workdir, {name: _job_entry(kind, job) for (_, name), job in zip(todo, jobs)})
  array_id = str(jobs[0].job_id).split('_')[0]
  print(f'submitted {len(jobs)} point(s) as Slurm array job {array_id} (logs in '
        f'{folder}); the table while they run:\n  '
        + (report_command or 'the same command with --report_only'), flush=True)
  return summarize_sweep(workdir, points, liveness=live)


# ---------------------------------------------------------------------- one point
def _scheduler_job_id() -> Optional[str]:
  for name in ('SLURM_ARRAY_JOB_ID', 'SLURM_JOB_ID', 'PBS_JOBID', 'LSB_JOBID', 'JOB_ID'):
    if os.environ.get(name):
      task = os.environ.get('SLURM_ARRAY_TASK_ID') if name == 'SLURM_ARRAY_JOB_ID' else None
      return os.environ[name] + (f'_{task}' if task else '')
  return None


def run_one_point(config: ml_collections.ConfigDict, sweep_path: str, workdir: str,
                  index: int, train_fn: TrainFn = runs.train,
                  check_fn: Optional[CheckFn] = runs.check) -> int:
  """--sweep_point=index: trains (or resumes) that point alone in this process.

  Returns the exit status: 0 when the point is complete, 1 when it failed (its
  traceback in <point>/sweep_error.txt).
  """
  points = load_sweep(sweep_path, config)
  if not 0 <= index < len(points):
    raise SweepError(f'--sweep_point={index}: {sweep_path} has {len(points)} points; '
                     f'give 0..{len(points) - 1}')
  point, name = points[index], point_name(points[index])
  point_dir = os.path.join(workdir, name)
  if report.is_complete(point_dir):
    print(f'point {index} ({name}) is already complete in {point_dir}: nothing to do',
          flush=True)
    return 0
  if check_fn is not None:
    check_points(config, [point], [name], check_fn)
  if jax.process_index() == 0:
    write_sweep_json(workdir, sweep_path, points, [point_name(p) for p in points])
  try:
    point_job.run_point(apply_overrides(config, point), point_dir, train_fn,
                        executor='sweep_point', job_id=_scheduler_job_id())
  except Exception as e:  # pylint: disable=broad-except
    print(f'error: sweep point {index} ({name}) failed: {type(e).__name__}: {e}; '
          f'traceback in {os.path.join(point_dir, run_files.SWEEP_ERROR)}. Run the same '
          'command again to retry it', file=sys.stderr, flush=True)
    return 1
  return 0


# ---------------------------------------------------------------------- launch.py
def report_table(sweep_path: str, workdir: str,
                 config: Optional[ml_collections.ConfigDict] = None
                 ) -> list[dict[str, Any]]:
  """--report_only: the table from the points' folders and jobs, now."""
  points = load_sweep(sweep_path, config)
  return summarize_sweep(workdir, points,
                         liveness=liveness(os.path.join(workdir, run_files.SWEEP_SUBMITIT)))


def _exit_status(rows: Sequence[Mapping[str, Any]], workdir: str) -> int:
  """0 when every point is complete; else 1, with one line naming the others."""
  failed = [r['point'] for r in rows if r.get('status') == 'failed']
  unfinished = [f'{r["point"]} ({r["status"]})' for r in rows
                if r.get('status') not in ('complete', 'failed')]
  if failed:
    print(f'error: {len(failed)} of {len(rows)} sweep points failed ({failed}); each '
          f'point folder under {workdir} holds its traceback in {run_files.SWEEP_ERROR}. '
          'Fix the cause and run the same command again: finished points are skipped',
          file=sys.stderr)
  elif unfinished:
    print(f'error: {len(unfinished)} of {len(rows)} sweep points did not finish '
          f'({", ".join(unfinished)}); run the same command again to resume them',
          file=sys.stderr)
  return 1 if failed or unfinished else 0


def command(config: Optional[ml_collections.ConfigDict], sweep_path: str, workdir: str,
            options: Options, base_command: Optional[str] = None,
            train_fn: TrainFn = runs.train,
            check_fn: Optional[CheckFn] = runs.check) -> int:
  """launch.py --sweep: the sequential runner (runner.py) by default, or this
  module's executors, one point, or the table. Returns the exit status: 0, or 1 when
  a point failed or did not finish (SweepError: the caller's exit status 2)."""
  report_command = (f'{base_command or "python launch.py"} --sweep={sweep_path} '
                    f'--workdir={workdir} --report_only')
  if options.report_only:
    rows = report_table(sweep_path, workdir, config)
    counts = {}
    for row in rows:
      counts[row['status']] = counts.get(row['status'], 0) + 1
    print(f'{os.path.join(workdir, run_files.SWEEP_MD)}: '
          + ', '.join(f'{n} {s}' for s, n in counts.items()), flush=True)
    return 0
  if config is None:
    raise SweepError('--config is required, e.g. --config=configs/quickstart.py')
  if options.point is not None:
    return run_one_point(config, sweep_path, workdir, options.point, train_fn, check_fn)
  if options.executor == 'sequential':  # one point after another, in this process
    rows = run_sweep(config, sweep_path, workdir, train_fn, check_fn=check_fn,
                     print_only=options.print_only, base_command=base_command)
    if options.print_only:
      return 0
  else:
    rows = submit(config, sweep_path, workdir, options.executor, options.resource_flags,
                  train_fn, check_fn, report_command=report_command)
    if options.executor == 'slurm':
      return 0
  return _exit_status(rows, workdir)

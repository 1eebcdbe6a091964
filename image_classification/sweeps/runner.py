"""Running a sweep's points one after another with the training loop.

Each point trains in WORKDIR/<point_name> through ``runs.train`` (the training
loop, plus the privacy audit when the point's config asks for it), as a job of
point_job.py. A point whose summary.json says complete is skipped, so a sweep resumes
where it stopped; a point that crashed leaves its traceback in <point>/sweep_error.txt,
the other points still run, and the next launch re-runs it. A stop request (Ctrl-C,
SIGTERM) stops the sweep. (cluster.py runs the same points as scheduler jobs.)
"""
import json
import os
import shlex
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from image_classification.workdir import run_files
from image_classification import runs
from image_classification.reporting import report
from image_classification.sweeps import point_job
from image_classification.sweeps.overrides import apply_overrides
from image_classification.sweeps.points import format_value
from image_classification.sweeps.points import Point
from image_classification.sweeps.points import point_name
from image_classification.sweeps.points import SweepError
from image_classification.sweeps.summary import summarize_sweep
from image_classification.sweeps.sweep_file import load_sweep

TrainFn = Callable[[ml_collections.ConfigDict, str], Any]
CheckFn = Callable[[ml_collections.ConfigDict], Any]

# launch.py's flags that belong to the sweep itself, not to one point's command (and
# every --sweep_* flag: the executor, the point, the resources).
SWEEP_FLAGS = ('sweep', 'workdir', 'print_only', 'report_only')


def _override_flags(overrides: Mapping[str, Any], prefix: str = 'config') -> list[str]:
  """--config.a.b=v for each override, values written as config_flags parses them."""
  return [f'--{prefix}.{path}={format_value(value)}' for path, value in overrides.items()]


def _config_overrides(flag: flags.Flag) -> Optional[dict[str, Any]]:
  """A config flag's overrides ({} when none); None for any other flag."""
  try:
    return config_flags.get_override_values(flag)
  except TypeError:  # not a config flag
    return None


def base_command_from_flags(flag_values: flags.FlagValues, program: str = 'launch.py',
                            drop: Sequence[str] = SWEEP_FLAGS) -> str:
  """The command that launched the sweep, less its sweep flags: each point's prefix.

  Built from what absl and ml_collections recorded, not by editing argv: the flags the
  command line set (``present``), each written back by absl (``serialize``), and for
  a config flag its file plus its ``--config.a.b=v`` overrides
  (``config_flags.get_override_values``). E.g. 'python launch.py
  --config=configs/quickstart.py --config.seed=1'.
  """
  present = []
  for name in flag_values:
    flag = flag_values[name]
    if (flag.present and flag.name not in drop and not flag.name.startswith('sweep_')
        and flag not in present):
      present.append(flag)
  overrides = {flag.name: _config_overrides(flag) for flag in present}
  configs = [name for name, values in overrides.items() if values is not None]
  args = []
  for flag in present:
    if any(flag.name.startswith(c + '.') for c in configs):
      continue  # an override: written with its config flag
    if overrides[flag.name] is not None:
      args.append(f'--{flag.name}={config_flags.get_config_filename(flag)}')
      args += _override_flags(overrides[flag.name], flag.name)
    else:
      args.append(flag.serialize())
  prefix = ['python', program] if program.endswith('.py') else [program]
  return ' '.join(shlex.quote(a) for a in prefix + args)


def command_for(point: Mapping[str, Any], point_workdir: str,
                base: Optional[str] = None) -> str:
  """The shell command that trains one point: the base command plus its flags."""
  args = _override_flags(point) + [f'--workdir={point_workdir}']
  return ' '.join([base or 'python launch.py'] + [shlex.quote(a) for a in args])


def check_points(config: ml_collections.ConfigDict, points: Sequence[Point],
                 names: Sequence[str], check_fn: CheckFn,
                 workdir: Optional[str] = None) -> None:
  """Runs ``check_fn`` on every point's config; raises one SweepError naming each
  point that fails (ValueError: ConfigError, DataError), before any point trains.
  Points already complete in ``workdir`` are not checked again."""
  problems = []
  for point, name in zip(points, names):
    if workdir and report.is_complete(os.path.join(workdir, name)):
      continue
    try:
      check_fn(apply_overrides(config, point))
    except ValueError as e:
      problems.append(f'point {name}: {e}')
  if problems:
    raise SweepError(
        f'{len(problems)} of {len(points)} sweep points have a bad config; nothing '
        'was trained. ' + ' | '.join(problems))


def write_sweep_json(workdir: str, sweep_path: str, points: Sequence[Point],
                     names: Sequence[str]) -> None:
  """workdir/sweep.json: the sweep file and its points (no result, nothing secret)."""
  content = {'sweep_file': os.path.abspath(sweep_path),
             'points': [{'point': n, 'overrides': p} for p, n in zip(points, names)]}
  # Written atomically: the jobs of --sweep_point may write it at the same time.
  run_files.write_json(workdir, run_files.SWEEP_JSON,
                       json.loads(json.dumps(content, default=repr)))


def run_sweep(config: ml_collections.ConfigDict, sweep_path: str, workdir: str,
              train_fn: TrainFn = runs.train, *, print_only: bool = False,
              base_command: Optional[str] = None,
              check_fn: Optional[CheckFn] = runs.check) -> list[dict[str, Any]]:
  """Runs every point of a sweep, one after another, and tabulates them.

  Args:
    config: the base config; each point's overrides apply to a copy.
    sweep_path: the sweep file (see ``load_sweep``).
    workdir: the sweep's folder; point i runs in workdir/<point_name>.
    train_fn: ``train_fn(config, point_workdir)`` trains one point and leaves
      summary.json there with status 'complete' when it finishes
      (``runs.train``).
    print_only: print one shell command per point (for the user's own
      scheduler) and run nothing; no file is written.
    base_command: the command those lines start with (see
      ``base_command_from_flags``); default 'python launch.py'.
    check_fn: ``check_fn(point_config)`` raises ValueError for a bad point
      (``runs.check``: config, data, privacy plan, model); every point not yet
      complete is checked before the first trains, also with print_only. None: no
      check.

  Returns:
    One row per point: 'point' (folder name), 'workdir', 'overrides' and the
    columns of sweep.csv. Points already complete are skipped; a point whose
    train_fn raised has status 'failed' and its error, and the other points
    still run. Afterwards workdir/sweep.csv, sweep.md and sweep.png are written.
  """
  points = load_sweep(sweep_path, config)
  names = [point_name(p) for p in points]
  if check_fn is not None:
    check_points(config, points, names, check_fn,
                 workdir=None if print_only else workdir)
  if print_only:
    for point, name in zip(points, names):
      print(command_for(point, os.path.join(workdir, name), base_command))
    return [{'point': name, 'workdir': os.path.join(workdir, name),
             'overrides': point, 'status': 'not run (print_only)'}
            for point, name in zip(points, names)]

  write_sweep_json(workdir, sweep_path, points, names)
  errors: dict[str, str] = {}
  for i, (point, name) in enumerate(zip(points, names), start=1):
    point_dir = os.path.join(workdir, name)
    if report.is_complete(point_dir):
      logging.info('Sweep point %d/%d %s: already complete, skipped.', i,
                   len(points), name)
      continue
    logging.info('Sweep point %d/%d %s: training in %s.', i, len(points), name,
                 point_dir)
    try:
      point_job.run_point(apply_overrides(config, point), point_dir, train_fn,
                          executor='sequential')
    except Exception as e:  # pylint: disable=broad-except
      errors[name] = f'{type(e).__name__}: {e}'
      logging.error('Sweep point %s failed: %s (traceback in %s); the sweep goes '
                    'on. Running the same command again re-runs it.', name,
                    errors[name], os.path.join(point_dir, run_files.SWEEP_ERROR))
  return summarize_sweep(workdir, points, errors)

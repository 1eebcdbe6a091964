"""Hyperparameter sweeps: config overrides run one point after another.

A sweep file is a Python file with ``get_sweep()`` returning a list of points;
a point maps dotted config paths to values::

  from image_classification.reporting import sweep

  def get_sweep():
    return sweep.product(
        sweep.grid({'privacy.target_epsilon': [1.0, 8.0],
                    'training.batch_size': [256, 1024]}),
        sweep.zipped({'training.optimizer.learning_rate': [1.0, 2.0],
                      'training.num_steps': [500, 1000]}))

Each point runs in WORKDIR/<point_name> (e.g. 'privacy.target_epsilon=1.0'). A
point whose summary.json says complete is skipped, so a sweep resumes where it
stopped; a point that crashed is logged, reported and re-run next time.

Privacy: every point is its own DP-SGD run with its own (epsilon, delta).
Choosing among the points by an accuracy measured on private data is a further
use of that data which the per-run epsilons do not count.
"""
import copy
import csv
import difflib
import hashlib
import importlib.machinery
import importlib.util
import itertools
import json
import os
import re
import shlex
import traceback
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging
import ml_collections

from image_classification.reporting import plots
from image_classification.reporting import report

Point = dict[str, Any]
TrainFn = Callable[[ml_collections.ConfigDict, str], Any]

EPSILON_FIELD = 'privacy.target_epsilon'
ERROR_FILE = report.SWEEP_ERROR_FILE
RESULT_COLUMNS = ('status', 'test_accuracy', 'epsilon', 'delta', 'steps',
                  'wall_time_sec', 'non_private', 'error')
_MAX_NAME_LEN = 120


class SweepError(ValueError):
  """A sweep file or one of its points is invalid."""


# --------------------------------------------------------- building points


def _axes(axes: Optional[Mapping[str, Sequence[Any]]],
          more: Mapping[str, Sequence[Any]], what: str) -> dict[str, list]:
  merged = dict(axes or {})
  merged.update(more)
  for path, values in merged.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
      raise SweepError(f'{what}: the values of {path!r} must be a list, '
                       f'got {values!r}')
    if not values:
      raise SweepError(f'{what}: {path!r} has no values')
  return {path: list(values) for path, values in merged.items()}


def grid(axes: Optional[Mapping[str, Sequence[Any]]] = None, /,
         **more: Sequence[Any]) -> list[Point]:
  """Every combination of the given values; the last field varies fastest.

  ``grid({'privacy.target_epsilon': [1, 8], 'seed': [0, 1]})`` gives 4 points.
  Dotted paths go in the mapping (or as ``**{'a.b': [...]}``); plain top-level
  fields may also be keyword arguments: ``grid(seed=[0, 1])``.
  """
  merged = _axes(axes, more, 'grid')
  return [dict(zip(merged, combo)) for combo in itertools.product(
      *merged.values())]


def zipped(axes: Optional[Mapping[str, Sequence[Any]]] = None, /,
           **more: Sequence[Any]) -> list[Point]:
  """Points that take the i-th value of every field (lists of equal length).

  ``zipped({'training.num_steps': [500, 1000], 'privacy.target_epsilon':
  [1, 8]})`` gives 2 points.
  """
  merged = _axes(axes, more, 'zipped')
  lengths = {path: len(values) for path, values in merged.items()}
  if len(set(lengths.values())) > 1:
    raise SweepError(f'zipped: the value lists differ in length: {lengths}')
  return [dict(zip(merged, values)) for values in zip(*merged.values())]


def product(*sweeps: Sequence[Mapping[str, Any]]) -> list[Point]:
  """Every combination of one point from each sweep, merged into one point."""
  points: list[Point] = [{}]
  for sweep in sweeps:
    merged = []
    for a in points:
      for b in sweep:
        both = set(a) & set(b)
        if both:
          raise SweepError(f'product: field(s) {sorted(both)} set twice')
        merged.append({**a, **b})
    points = merged
  return points


# ---------------------------------------------------------- naming points


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    return repr(value)
  return str(value)


def point_name(overrides: Mapping[str, Any]) -> str:
  """A stable, filesystem-safe folder name for a point.

  ``{'privacy.target_epsilon': 1.0, 'seed': 2}`` ->
  'privacy.target_epsilon=1.0,seed=2'. Fields keep the sweep file's order;
  characters other than letters, digits and ``._=,+-`` become '_'; a name
  longer than 120 characters is cut and ends in a hash of the whole point. The
  empty point (the base config unchanged) is named 'base'.
  """
  if not overrides:
    return 'base'
  full = ','.join(f'{path}={_format_value(value)}'
                  for path, value in overrides.items())
  name = re.sub(r'[^A-Za-z0-9._=,+-]', '_', full)
  if name[0] in '.-':
    name = '_' + name
  if len(name) > _MAX_NAME_LEN:
    digest = hashlib.sha1(full.encode('utf-8')).hexdigest()[:10]
    name = name[:_MAX_NAME_LEN - 11] + '-' + digest
  return name


# ------------------------------------------------------ applying overrides


def _parent(config: ml_collections.ConfigDict, path: str):
  """Returns (the ConfigDict holding ``path``'s last key, that key)."""
  keys = path.split('.')
  node, done = config, []
  for i, key in enumerate(keys):
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      raise SweepError(f'field {path!r}: {".".join(done)!r} is a value, not a '
                       'group of fields')
    if key not in node:
      close = difflib.get_close_matches(key, list(node.keys()), n=3)
      where = f'in {".".join(done)!r}' if done else 'at the top level'
      hint = f'; did you mean {close}?' if close else (
          f'; fields {where}: {sorted(node.keys())}')
      raise SweepError(f'field {path!r}: the config has no {key!r} {where}'
                       f'{hint}')
    if i == len(keys) - 1:
      return node, key
    done.append(key)
    node = node[key]
  raise SweepError(f'field {path!r}: empty path')


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Returns a copy of ``config`` with the dotted-path overrides applied.

  Only fields the config already has may be set, and ConfigDict's type checks
  hold: an int may go into a float field, a float into an int field may not.

  Raises:
    SweepError: naming the field that does not exist or the value that does not
      fit its type.
  """
  new = copy.deepcopy(config)
  for path, value in overrides.items():
    if not isinstance(path, str) or not path:
      raise SweepError(f'field names must be dotted strings, got {path!r}')
    parent, key = _parent(new, path)
    if isinstance(parent[key], ml_collections.ConfigDict):
      raise SweepError(f'field {path!r} is a group of fields; set its fields '
                       'one by one')
    try:
      parent[key] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f'field {path!r} cannot be set to {value!r}: {e}') from e
  return new


# ------------------------------------------------------------ sweep files


def load_sweep(path: str,
               config: Optional[ml_collections.ConfigDict] = None
               ) -> list[Point]:
  """Loads the points of a sweep file (a Python file with ``get_sweep()``).

  Args:
    path: the sweep file.
    config: when given, every point is checked against it: each field must
      exist and each value must fit the field's type.

  Returns:
    The points, as dicts from dotted config paths to values.

  Raises:
    SweepError: naming the file when it is missing, fails to load, has no
      ``get_sweep``, returns something other than a non-empty list of points,
      or a point does not fit ``config``. Two points with the same folder name
      are refused too.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise SweepError(f'sweep file {path!r} does not exist')
  module_name = '_sweep_' + hashlib.sha1(
      os.path.abspath(path).encode('utf-8')).hexdigest()[:12]
  loader = importlib.machinery.SourceFileLoader(module_name, path)
  spec = importlib.util.spec_from_loader(module_name, loader)
  module = importlib.util.module_from_spec(spec)
  try:
    loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {path!r} failed to load: '
                     f'{type(e).__name__}: {e}') from e
  get_sweep = getattr(module, 'get_sweep', None)
  if not callable(get_sweep):
    raise SweepError(f'sweep file {path!r} has no get_sweep() function')
  try:
    points = get_sweep()
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f'sweep file {path!r}: get_sweep() raised '
                     f'{type(e).__name__}: {e}') from e
  if (isinstance(points, (str, bytes, Mapping)) or
      not isinstance(points, Sequence) or not points):
    raise SweepError(f'sweep file {path!r}: get_sweep() must return a '
                     f'non-empty list of dicts, got {points!r}')
  names: dict[str, int] = {}
  for i, point in enumerate(points):
    if not isinstance(point, Mapping):
      raise SweepError(f'sweep file {path!r}, point {i}: expected a dict of '
                       f'dotted field -> value, got {point!r}')
    name = point_name(point)
    if name in names:
      raise SweepError(f'sweep file {path!r}: points {names[name]} and {i} '
                       f'share the folder name {name!r}')
    names[name] = i
    if config is not None:
      try:
        apply_overrides(config, point)
      except SweepError as e:
        raise SweepError(f'sweep file {path!r}, point {i} ({name}): {e}') from e
  return [dict(p) for p in points]


# ------------------------------------------------------------ running


def command_for(point: Mapping[str, Any], point_workdir: str,
                base_command: Optional[str] = None) -> str:
  """The shell command that trains one point: base command plus flags."""
  args = [f'--config.{path}={_format_value(value)}'
          for path, value in point.items()]
  args.append(f'--workdir={point_workdir}')
  base = base_command or 'python launch.py'
  return ' '.join([base] + [shlex.quote(a) for a in args])


def base_command_from_argv(
    argv: Sequence[str],
    drop: Sequence[str] = ('sweep', 'workdir'),
    drop_bool: Sequence[str] = ('print_only',)) -> str:
  """The launching command line minus the sweep's own flags, for print_only.

  ``['launch.py', '--config=c.py', '--config.seed=1', '--sweep=s.py',
  '--workdir=w', '--print_only']`` -> 'python launch.py --config=c.py
  --config.seed=1'. Flags in ``drop`` take a value ('--f=v' or '--f v');
  flags in ``drop_bool`` do not ('--f', '--nof', '--f=true').
  """
  out = [argv[0]] if argv else ['launch.py']
  args = list(argv[1:])
  i = 0
  while i < len(args):
    arg = args[i]
    name = arg.lstrip('-').split('=', 1)[0] if arg.startswith('-') else None
    if name in drop:
      i += 1 if '=' in arg else 2
      continue
    if name in drop_bool or (name and name.startswith('no') and
                             name[2:] in drop_bool):
      i += 1
      continue
    out.append(arg)
    i += 1
  if out[0].endswith('.py'):
    out.insert(0, 'python')
  return ' '.join(shlex.quote(a) for a in out)


def check_points(config: ml_collections.ConfigDict, points: Sequence[Point],
                 names: Sequence[str], check_fn: Callable[[ml_collections.ConfigDict],
                                                          Any],
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


def run_sweep(config: ml_collections.ConfigDict, sweep_path: str,
              workdir: str, train_fn: TrainFn, print_only: bool = False,
              base_command: Optional[str] = None,
              check_fn: Optional[Callable[[ml_collections.ConfigDict], Any]] = None
              ) -> list[dict[str, Any]]:
  """Runs every point of a sweep, one after another, and tabulates them.

  Args:
    config: the base config; each point's overrides apply to a copy.
    sweep_path: the sweep file (see ``load_sweep``).
    workdir: the sweep's folder; point i runs in workdir/<point_name>.
    train_fn: ``train_fn(config, point_workdir)`` trains one point and leaves
      summary.json there with status 'complete' when it finishes.
    print_only: print one shell command per point (for the user's own
      scheduler) and run nothing; no file is written.
    base_command: the command those lines start with, e.g. 'python launch.py
      --config=configs/quickstart.py'; default 'python launch.py'.
    check_fn: ``check_fn(point_config)`` raises ValueError for a bad point (e.g.
      ``loop.check``: config, data, privacy plan, model); every point not yet
      complete is checked before the first trains, also with print_only.

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

  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'sweep.json'), 'w') as f:
    json.dump({'sweep_file': os.path.abspath(sweep_path),
               'points': [{'point': n, 'overrides': p}
                          for p, n in zip(points, names)]},
              f, indent=2, default=repr)
  errors: dict[str, str] = {}
  for i, (point, name) in enumerate(zip(points, names), start=1):
    point_dir = os.path.join(workdir, name)
    if report.is_complete(point_dir):
      logging.info('Sweep point %d/%d %s: already complete, skipped.', i,
                   len(points), name)
      continue
    logging.info('Sweep point %d/%d %s: training in %s.', i, len(points), name,
                 point_dir)
    os.makedirs(point_dir, exist_ok=True)
    error_file = os.path.join(point_dir, ERROR_FILE)
    try:
      train_fn(apply_overrides(config, point), point_dir)
    except Exception as e:  # pylint: disable=broad-except
      errors[name] = f'{type(e).__name__}: {e}'
      with open(error_file, 'w') as f:
        f.write(traceback.format_exc())
      logging.error('Sweep point %s failed: %s (traceback in %s); the sweep goes '
                    'on. Running the same command again re-runs it.', name,
                    errors[name], error_file)
    else:
      if os.path.exists(error_file):
        os.remove(error_file)
  return summarize_sweep(workdir, points, errors)


# ------------------------------------------------------------ results


def summarize_sweep(workdir: str, points: Sequence[Mapping[str, Any]],
                    errors: Optional[Mapping[str, str]] = None
                    ) -> list[dict[str, Any]]:
  """Reads each point's summary.json; writes sweep.csv, sweep.md, sweep.png.

  Also usable on its own after points ran elsewhere (e.g. from the commands of
  ``print_only``).

  Args:
    workdir: the sweep folder.
    points: the sweep's points (override dicts).
    errors: point name -> error message of points that failed in this launch.

  Returns:
    One row per point (see ``run_sweep``).
  """
  errors = dict(errors or {})
  rows = []
  for point in points:
    name = point_name(point)
    point_dir = os.path.join(workdir, name)
    summary = report.read_summary(point_dir) or {}
    error = errors.get(name)
    if error is None and summary.get('status') != 'complete':
      # A failure from an earlier launch that has not been re-run since.
      error_file = os.path.join(point_dir, ERROR_FILE)
      if os.path.exists(error_file):
        with open(error_file) as f:
          lines = [l for l in f.read().strip().splitlines() if l.strip()]
        error = lines[-1] if lines else 'failed'
    if error is not None:
      status = 'failed'
    else:
      status = summary.get('status') or 'not finished'
    row = {'point': name, 'workdir': point_dir, 'overrides': dict(point)}
    row.update(point)
    row.update({'status': status, 'error': error or ''})
    for key in ('test_accuracy', 'epsilon', 'delta', 'steps', 'wall_time_sec',
                'non_private', 'insecure_seeded_noise'):
      row[key] = summary.get(key)
    rows.append(row)

  fields = _swept_fields(points)
  _write_csv(os.path.join(workdir, 'sweep.csv'), rows, fields)
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write(_markdown(rows, fields))
  png = os.path.join(workdir, 'sweep.png')
  try:
    plot_sweep(rows, fields, png)
  except ImportError as e:
    logging.warning('sweep.png not written: matplotlib is unavailable (%s)', e)
  except Exception:  # pylint: disable=broad-except
    logging.exception('sweep.png could not be plotted; tables are written.')
  failed = [r['point'] for r in rows if r['status'] == 'failed']
  if failed:
    logging.warning('Sweep points failed (re-run the sweep to retry): %s',
                    ', '.join(failed))
  logging.info('Sweep results in %s/sweep.md', workdir)
  return rows


def _swept_fields(points: Sequence[Mapping[str, Any]]) -> list[str]:
  fields: list[str] = []
  for point in points:
    fields += [p for p in point if p not in fields]
  return fields


def _csv_value(value: Any) -> Any:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)
  return value


def _write_csv(path: str, rows: list[dict[str, Any]],
               fields: list[str]) -> None:
  columns = ['point'] + fields + list(RESULT_COLUMNS)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
    writer.writeheader()
    for row in rows:
      writer.writerow({c: _csv_value(row.get(c)) for c in columns})


def _markdown(rows: list[dict[str, Any]], fields: list[str]) -> str:
  header = ['point'] + fields + ['test accuracy (%)', 'epsilon', 'delta',
                                 'steps', 'wall time', 'status']
  table = []
  for row in rows:
    non_private = bool(row.get('non_private'))
    table.append(
        [row['point'] + (' (non-private)' if non_private else '')
         + (report.INSECURE_LABEL if row.get('insecure_seeded_noise') else '')] +
        [_format_value(row[f]) if f in row['overrides'] else '(base)'
         for f in fields] +
        [report.format_accuracy(row['test_accuracy']),
         report.format_epsilon(row['epsilon'], non_private),
         '' if non_private else report.format_float(row['delta'], 2),
         report.format_int(row['steps']),
         report.format_duration(row['wall_time_sec']),
         row['status']])
  out = ['# Sweep results\n', report.markdown_table(header, table), '',
         '**Privacy of the sweep.** ' + report.PRIVACY_NOTE + '\n',
         'Epsilon is the budget each run spent; a point marked non-private '
         'has no privacy guarantee.\n',
         '![sweep](sweep.png)\n']
  failed = [r for r in rows if r['status'] == 'failed']
  if failed:
    out.append('## Failed points (re-run the sweep to retry them)\n')
    out += [f"- {r['point']}: {r['error']} (traceback in "
            f"{r['point']}/{ERROR_FILE})" for r in failed]
    out.append('')
  return '\n'.join(out)


def plot_sweep(rows: Sequence[dict[str, Any]], fields: Sequence[str],
               path: str) -> str:
  """Plots test accuracy against the swept parameter.

  With privacy.target_epsilon swept, x is the spent epsilon. Otherwise x is the
  first swept field whose values are all numbers; lines are grouped by the
  other swept fields. With no numeric field, a bar per point.
  """
  varying = [f for f in fields
             if len({repr(r['overrides'].get(f)) for r in rows}) > 1]

  def group_label(row, x_field):
    return ', '.join(f'{f}={_format_value(row["overrides"].get(f))}'
                     for f in varying if f != x_field)

  if EPSILON_FIELD in fields:
    runs = [dict(r, label=r['point'], group=group_label(r, EPSILON_FIELD))
            for r in rows]
    return plots.plot_accuracy_vs_epsilon(runs, path,
                                          title='Sweep: accuracy vs epsilon')
  numeric = [f for f in (varying or list(fields))
             if all(plots.is_number(r['overrides'].get(f)) for r in rows)]
  if not numeric:
    return plots.plot_bars([r['point'] for r in rows],
                           [_percent(r['test_accuracy']) for r in rows], path,
                           xlabel='test accuracy (%)', title='Sweep')
  x_field = numeric[0]
  groups: dict[str, tuple[list, list]] = {}
  for r in rows:
    xs, ys = groups.setdefault(group_label(r, x_field), ([], []))
    xs.append(r['overrides'][x_field])
    ys.append(_percent(r['test_accuracy']))
  series = [(label, xs, ys) for label, (xs, ys) in groups.items()]
  return plots.plot_lines(series, path, xlabel=x_field,
                          ylabel='test accuracy (%)',
                          title=f'Sweep: accuracy vs {x_field}')


def _percent(value: Any) -> Optional[float]:
  return 100 * float(value) if plots.is_number(value) else None

"""A sweep's results: sweep.csv, sweep.md and sweep.png from its points' run files.

The table cells are formatted by reporting/report.py, as in --report's tables. It can
be written at any time, also while points still run elsewhere; each point's status:

  complete      summary.json says so
  running       its job (sweep_job.json) started and, as far as can be known, runs
  failed        it raised: the last line of <point>/sweep_error.txt is in the table
  stopped       its job ended without finishing (Ctrl-C, SIGTERM, a time limit, a
                killed process): running it again resumes it
  submitted     a scheduler job was submitted for it (sweep_jobs.json), not started
  not finished  run files without a job record (trained some other way, unfinished)
  missing       nothing ran and nothing is queued
"""
import csv
import os
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import logging

from image_classification.workdir import run_files
from image_classification.reporting import plots
from image_classification.reporting import report
from image_classification.sweeps import point_job
from image_classification.sweeps.points import format_value
from image_classification.sweeps.points import point_name

# Whether a job (a sweep_job.json record, or a sweep_jobs.json entry) still runs or
# waits: True, False, or None when it cannot be known from here.
Liveness = Callable[[Mapping[str, Any]], Optional[bool]]

EPSILON_FIELD = 'privacy.target_epsilon'
RESULT_COLUMNS = ('status', 'test_accuracy', 'epsilon', 'delta', 'steps',
                  'wall_time_sec', 'non_private', 'error')


def _last_error_line(point_dir: str) -> Optional[str]:
  error_file = os.path.join(point_dir, run_files.SWEEP_ERROR)
  if not os.path.exists(error_file):
    return None
  with open(error_file) as f:
    lines = [l for l in f.read().strip().splitlines() if l.strip()]
  return lines[-1] if lines else 'failed'


def point_status(point_dir: str, error: Optional[str] = None,
                 submitted: Optional[Mapping[str, Any]] = None,
                 liveness: Optional[Liveness] = None) -> tuple[str, Optional[str]]:
  """(status, error) of one point (the statuses are in this module's docstring).

  ``error``: this launch's error for the point; ``submitted``: its sweep_jobs.json
  entry; ``liveness``: tells whether a job still runs (default: a process on this host).
  """
  liveness = liveness or point_job.process_is_alive
  summary = report.read_summary(point_dir) or {}
  if summary.get('status') == 'complete':
    return 'complete', None
  job = point_job.read_record(point_dir)
  state = job.get('state') if job else None
  if error is None and state == point_job.RUNNING:
    # Started; 'stopped' when its process or job is known to be gone.
    return ('stopped' if liveness(job) is False else 'running'), None
  error = error or _last_error_line(point_dir)
  if error is not None or state == point_job.FAILED:
    return 'failed', error or (job or {}).get('error') or 'failed'
  if state == point_job.STOPPED:
    return 'stopped', None
  if submitted and liveness(submitted) is not False:
    return 'submitted', None
  if summary.get('status'):
    return summary['status'], None
  if any(os.path.exists(os.path.join(point_dir, f)) for f in run_files.RUN_FILES):
    return 'not finished', None
  return 'missing', None


def read_submitted(workdir: str) -> dict[str, dict[str, Any]]:
  """sweep_jobs.json's 'points': point name -> the job submitted for it ({} if none)."""
  try:
    return dict(run_files.read_json(workdir, run_files.SWEEP_JOBS).get('points', {}))
  except run_files.RunFileError:
    return {}


def summarize_sweep(workdir: str, points: Sequence[Mapping[str, Any]],
                    errors: Optional[Mapping[str, str]] = None,
                    liveness: Optional[Liveness] = None) -> list[dict[str, Any]]:
  """Reads each point's folder; writes sweep.csv, sweep.md, sweep.png.

  Also usable on its own while or after points run elsewhere (a scheduler's jobs,
  the commands of ``print_only``): unfinished points get their status (see the
  module's docstring).

  Args:
    workdir: the sweep folder.
    points: the sweep's points (override dicts).
    errors: point name -> error message of points that failed in this launch.
    liveness: whether a job still runs (see ``point_status``).

  Returns:
    One row per point: 'point' (folder name), 'workdir', 'overrides', the swept
    fields and the columns of sweep.csv.
  """
  errors = dict(errors or {})
  submitted = read_submitted(workdir)
  rows = []
  for point in points:
    name = point_name(point)
    point_dir = os.path.join(workdir, name)
    summary = report.read_summary(point_dir) or {}
    status, error = point_status(point_dir, errors.get(name), submitted.get(name),
                                 liveness)
    row = {'point': name, 'workdir': point_dir, 'overrides': dict(point)}
    row.update(point)
    row.update({'status': status, 'error': error or ''})
    for key in ('test_accuracy', 'epsilon', 'delta', 'steps', 'wall_time_sec',
                'non_private', 'insecure_seeded_noise', 'test_on_private_data'):
      row[key] = summary.get(key)
    row['total_epsilon'] = summary.get('total_epsilon_with_pretrained')
    if status in ('running', 'stopped', 'not finished'):
      # Progress so far: the last logged step and the epsilon spent up to it.
      logged, _ = run_files.read_metrics(point_dir)
      if logged:
        row['steps'], row['epsilon'] = logged[-1].get('step'), logged[-1].get('epsilon')
    rows.append(row)

  fields = _swept_fields(points)
  _write_csv(os.path.join(workdir, run_files.SWEEP_CSV), rows, fields)
  with open(os.path.join(workdir, run_files.SWEEP_MD), 'w') as f:
    f.write(_markdown(rows, fields))
  png = os.path.join(workdir, run_files.SWEEP_PNG)
  try:
    plot_sweep(rows, fields, png)
  except ImportError as e:
    logging.warning('%s not written: matplotlib is unavailable (%s)',
                    run_files.SWEEP_PNG, e)
  except Exception:  # pylint: disable=broad-except
    logging.exception('%s could not be plotted; tables are written.',
                      run_files.SWEEP_PNG)
  failed = [r['point'] for r in rows if r['status'] == 'failed']
  if failed:
    logging.warning('Sweep points failed (re-run the sweep to retry): %s',
                    ', '.join(failed))
  logging.info('Sweep results in %s', os.path.join(workdir, run_files.SWEEP_MD))
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
        [format_value(row[f]) if f in row['overrides'] else '(base)'
         for f in fields] +
        [report.format_accuracy(row['test_accuracy']) + report.test_label(row),
         report.format_epsilon(row['epsilon'], non_private) + report.total_label(row),
         '' if non_private else report.format_delta(row['delta']),
         report.format_int(row['steps']),
         report.format_duration(row['wall_time_sec']),
         row['status']])
  counts = {}
  for row in rows:
    counts[row['status']] = counts.get(row['status'], 0) + 1
  out = ['# Sweep results\n']
  if set(counts) != {'complete'}:
    out.append('Points: ' + ', '.join(f'{n} {status}' for status, n in counts.items())
               + ' (the table is as the points\' folders were when it was written).\n')
  out += [report.markdown_table(header, table), '',
         '**Privacy of the sweep.** ' + report.PRIVACY_NOTE + '\n',
         'Epsilon is the budget each run spent; a point marked non-private '
         'has no privacy guarantee.\n',
         f'![sweep]({run_files.SWEEP_PNG})\n']
  failed = [r for r in rows if r['status'] == 'failed']
  if failed:
    out.append('## Failed points (re-run the sweep to retry them)\n')
    out += [f"- {r['point']}: {r['error']} (traceback in "
            f"{r['point']}/{run_files.SWEEP_ERROR})" for r in failed]
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
    return ', '.join(f'{f}={format_value(row["overrides"].get(f))}'
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

"""A sweep's results: sweep.csv, sweep.md and sweep.png from its points' run files.

The table cells are formatted by reporting/report.py, as in --report's tables.
"""
import csv
import os
from typing import Any, Mapping, Optional, Sequence

from absl import logging

from image_classification import run_files
from image_classification.reporting import plots
from image_classification.reporting import report
from image_classification.sweeps.points import format_value
from image_classification.sweeps.points import point_name

EPSILON_FIELD = 'privacy.target_epsilon'
RESULT_COLUMNS = ('status', 'test_accuracy', 'epsilon', 'delta', 'steps',
                  'wall_time_sec', 'non_private', 'error')


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
    One row per point: 'point' (folder name), 'workdir', 'overrides', the swept
    fields and the columns of sweep.csv.
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
      error_file = os.path.join(point_dir, run_files.SWEEP_ERROR)
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
        [report.format_accuracy(row['test_accuracy']),
         report.format_epsilon(row['epsilon'], non_private),
         '' if non_private else report.format_delta(row['delta']),
         report.format_int(row['steps']),
         report.format_duration(row['wall_time_sec']),
         row['status']])
  out = ['# Sweep results\n', report.markdown_table(header, table), '',
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

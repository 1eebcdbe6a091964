"""Results tables and plots aggregated from training run folders.

A run folder holds what the trainer writes: config.json, metrics.jsonl,
privacy.json and summary.json (a run is finished when summary.json says
``"status": "complete"``). A sweep folder (sweep.csv, or sub-folders holding run
files) expands to its points. A missing or corrupt file is reported by name and
the other runs are still reported; folders that hold no run at all are refused
(``ReportError``) before anything is written.

Entry point: python launch.py --report=RUN[,RUN...] --workdir=OUT_DIR (make_report).
The formatting helpers (format_*, markdown_table) also lay out the sweep tables.
"""
import csv
import os
import re
from typing import Any, Iterator, Optional, Sequence

from absl import logging

from image_classification.workdir import run_files
from image_classification.reporting import plots
from image_classification.reporting import privacy_report
from image_classification.reporting import round_up
from image_classification import errors



class ReportError(errors.UserError):
  """None of the folders given holds a run: nothing to report (one line)."""


PRIVACY_NOTE = (
    'Each epsilon is the (epsilon, delta)-DP guarantee of one run on its own, as '
    'computed by that run\'s accountant. Choosing among runs (tuning '
    'hyperparameters) by an accuracy measured on private data spends privacy that '
    'these per-run epsilons do not count: account for the selection (e.g. '
    'Papernot & Steinke 2022, "Hyperparameter Tuning with Renyi Differential '
    'Privacy") or tune on public data.')


# ------------------------------------------------------------------ reading


def read_summary(run_dir: str) -> Optional[dict[str, Any]]:
  """summary.json of ``run_dir``, or None when it is missing or corrupt."""
  try:
    return run_files.read_json(run_dir, run_files.SUMMARY)
  except run_files.RunFileError:
    return None


def is_complete(run_dir: str) -> bool:
  """True when ``run_dir``/summary.json exists with status 'complete'."""
  summary = read_summary(run_dir)
  return bool(summary) and summary.get('status') == 'complete'


# ---------------------------------------------------------------- formatting


def _number(value: Any) -> Optional[float]:
  return float(value) if plots.is_number(value) else None


def format_accuracy(value: Any) -> str:
  v = _number(value)
  return '' if v is None else f'{100 * v:.2f}'


def format_epsilon(value: Any, non_private: bool = False) -> str:
  """Rounded UP (reporting/round_up.py): 3 significant digits below 0.1, else 2
  decimals."""
  if non_private:
    return 'inf (non-private)'
  v = _number(value)
  if v is None:
    return ''
  return round_up.round_up(v, 3) if v < 0.1 else round_up.round_up(v, decimals=2)


def format_delta(value: Any) -> str:
  """Rounded UP to 2 significant digits (reporting/round_up.py)."""
  v = _number(value)
  return '' if v is None else round_up.round_up(v, 2)


def format_float(value: Any, digits: int = 3) -> str:
  v = _number(value)
  return '' if v is None else f'{v:.{digits}g}'


def format_int(value: Any) -> str:
  v = _number(value)
  return '' if v is None else str(int(v))


def format_duration(value: Any) -> str:
  v = _number(value)
  if v is None:
    return ''
  if v < 60:
    return f'{v:.1f}s'
  minutes, seconds = divmod(int(round(v)), 60)
  if minutes < 60:
    return f'{minutes}m {seconds:02d}s'
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h {minutes:02d}m'


def markdown_table(header: Sequence[str],
                   rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub-flavoured markdown table; '|' in cells is escaped."""

  def cell(value):
    return str(value).replace('|', r'\|').replace('\n', ' ')

  lines = ['| ' + ' | '.join(cell(h) for h in header) + ' |',
           '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(cell(c) for c in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'


def safe_filename(name: str) -> str:
  """A file-name-safe version of a run name ('a/b c' -> 'a__b_c')."""
  name = name.replace(os.sep, '__').replace('/', '__')
  return re.sub(r'[^A-Za-z0-9._=,+-]', '_', name).lstrip('.') or 'run'


# ------------------------------------------------------------------ finding


def _has_run_files(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in run_files.RUN_FILES)


def is_sweep_dir(path: str) -> bool:
  """A sweep folder: not itself a run, with sweep.csv or run sub-folders."""
  if _has_run_files(path):
    return False
  if os.path.exists(os.path.join(path, run_files.SWEEP_CSV)):
    return True
  return any(_has_run_files(os.path.join(path, d)) for d in _subdirs(path))


def _subdirs(path: str) -> list[str]:
  try:
    return sorted(d for d in os.listdir(path)
                  if os.path.isdir(os.path.join(path, d)))
  except OSError:
    return []


def _sweep_points(path: str, problems: list[str]) -> list[str]:
  """Point sub-folder names: sweep.csv order first, then other run folders."""
  names = []
  csv_path = os.path.join(path, run_files.SWEEP_CSV)
  if os.path.exists(csv_path):
    try:
      with open(csv_path, newline='') as f:
        for row in csv.DictReader(f):
          if row.get('point') and row['point'] not in names:
            names.append(row['point'])
    except (OSError, csv.Error, UnicodeDecodeError) as e:
      problems.append(f'{csv_path}: cannot be read ({e}); using sub-folders')
  for d in _subdirs(path):
    if d not in names and _has_run_files(os.path.join(path, d)):
      names.append(d)
  return names


def expand_run_dirs(run_dirs: Sequence[str],
                    problems: list[str]) -> Iterator[tuple[str, str]]:
  """Yields (run name, folder), expanding sweep folders into their points."""
  seen: dict[str, int] = {}

  def unique(name):
    seen[name] = seen.get(name, 0) + 1
    return name if seen[name] == 1 else f'{name}_{seen[name]}'

  for run_dir in run_dirs:
    run_dir = os.fspath(run_dir)
    base = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    if not os.path.isdir(run_dir):
      problems.append(f'{run_dir}: no such run folder')
      continue
    if is_sweep_dir(run_dir):
      points = _sweep_points(run_dir, problems)
      if not points:
        problems.append(f'{run_dir}: sweep folder without points')
      for point in points:
        yield unique(f'{base}/{point}'), os.path.join(run_dir, point)
    else:
      yield unique(base), run_dir


# ------------------------------------------------------------------ one run


def _first(*values: Any) -> Any:
  for v in values:
    if v is not None:
      return v
  return None


def _get(d: Optional[dict[str, Any]], *path: str) -> Any:
  for key in path:
    if not isinstance(d, dict):
      return None
    d = d.get(key)
  return d


def load_run(name: str, run_dir: str,
             problems: list[str]) -> tuple[dict[str, Any], list[dict]]:
  """Reads one run folder; returns (table row, metrics rows).

  Problems (missing or corrupt files) are appended to ``problems`` by file name;
  whatever could be read still fills the row.
  """
  if not _has_run_files(run_dir):
    failed = os.path.exists(os.path.join(run_dir, run_files.SWEEP_ERROR))
    problems.append(f'{run_dir}: no run files ({", ".join(run_files.RUN_FILES)})' +
                    (f'; it failed, see {run_files.SWEEP_ERROR}' if failed else ''))
    row = {'run': name, 'path': run_dir, 'non_private': False,
           'status': 'failed' if failed else 'no results'}
    for key in ('model', 'dataset', 'test_accuracy', 'epsilon', 'delta',
                'steps', 'noise_multiplier', 'wall_time_sec', 'accountant',
                'sampling', 'neighboring_relation'):
      row[key] = None
    return row, []
  files = {}
  for key, filename in (('config', run_files.CONFIG), ('summary', run_files.SUMMARY),
                        ('privacy', run_files.PRIVACY)):
    try:
      files[key] = run_files.read_json(run_dir, filename)
    except run_files.RunFileError as e:
      message = str(e)
      if key == 'summary' and message.endswith(': missing'):
        message += ' (run not finished, or crashed)'
      problems.append(message)
      files[key] = None
  config, summary, privacy = files['config'], files['summary'], files['privacy']
  metrics, metric_problems = run_files.read_metrics(run_dir)
  problems.extend(metric_problems)

  def last(key):
    for row in reversed(metrics):
      if row.get(key) is not None:
        return row[key]
    return None

  non_private = bool(_first(_get(summary, 'non_private'),
                            _get(privacy, 'non_private'),
                            _get(config, 'privacy', 'allow_non_private'),
                            False))
  row = {
      'run': name,
      'path': run_dir,
      'model': _get(config, 'model', 'name'),
      'dataset': _get(config, 'data', 'name'),
      'test_accuracy': _first(_get(summary, 'test_accuracy'),
                              last('test_accuracy')),
      'epsilon': _first(_get(summary, 'epsilon'), _get(privacy, 'epsilon'),
                        last('epsilon')),
      'delta': _first(_get(summary, 'delta'), _get(privacy, 'delta'),
                      _get(config, 'privacy', 'delta')),
      'steps': _first(_get(summary, 'steps'), _get(privacy, 'steps_taken'),
                      _get(privacy, 'steps'), last('step')),
      'noise_multiplier': _first(_get(summary, 'noise_multiplier'),
                                 _get(privacy, 'noise_multiplier')),
      'wall_time_sec': _get(summary, 'wall_time_sec'),
      'accountant': _get(privacy, 'accountant'),
      'sampling': _get(privacy, 'sampling'),
      'neighboring_relation': _get(privacy, 'neighboring_relation'),
      'non_private': non_private,
      # The test split was carved out of the private training data (no noise).
      'test_on_private_data': bool(_first(_get(summary, 'test_on_private_data'),
                                          _get(privacy, 'evaluation_data'), False)),
      # A fine-tuning run that composes with earlier runs on the same data.
      'total_epsilon': _first(_get(summary, 'total_epsilon_with_pretrained'),
                              _get(privacy, 'total_epsilon_with_pretrained')),
      'insecure_seeded_noise': bool(_first(
          _get(privacy, 'insecure_seeded_noise'),
          _get(config, 'privacy', 'insecure_seeded_noise'), False)),
      'status': _get(summary, 'status') or (
          'no summary (running or crashed)' if metrics else 'no results'),
  }
  if not summary and os.path.exists(os.path.join(run_dir, run_files.SWEEP_ERROR)):
    row['status'] = f'failed (see {run_files.SWEEP_ERROR})'
  return row, metrics


# ------------------------------------------------------------------ report


def test_label(row: dict[str, Any]) -> str:
  """After a test accuracy measured on private data (privacy_report.PRIVATE_TEST_LABEL)."""
  return privacy_report.PRIVATE_TEST_LABEL if row.get('test_on_private_data') else ''


def total_label(row: dict[str, Any]) -> str:
  """After a fine-tuning run's own epsilon: the total with its composed ancestors,
  which is the guarantee for that data."""
  total = row.get('total_epsilon')
  return '' if total is None else f' (total {format_epsilon(total, False)})'


def _table_row(row: dict[str, Any]) -> list[str]:
  non_private = row['non_private']
  accounting = ', '.join(str(row[k]) for k in
                         ('accountant', 'sampling', 'neighboring_relation')
                         if row.get(k))
  return [
      row['run'] + (' (non-private)' if non_private else '')
      + (INSECURE_LABEL if row.get('insecure_seeded_noise') else ''),
      row['model'] or '',
      row['dataset'] or '',
      format_accuracy(row['test_accuracy']) + test_label(row),
      format_epsilon(row['epsilon'], non_private) + total_label(row),
      '' if non_private else format_delta(row['delta']),
      format_int(row['steps']),
      '0 (non-private)' if non_private else format_float(
          row['noise_multiplier'], 4),
      format_duration(row['wall_time_sec']),
      'none (non-private)' if non_private else accounting,
      row['status'],
  ]


# Marks a run whose noise and batches were derived from config.seed (testing switch).
INSECURE_LABEL = ' (INSECURE: seeded noise, no guarantee once its config is published)'

REPORT_HEADER = ('run', 'model', 'dataset', 'test accuracy (%)', 'epsilon',
                 'delta', 'steps', 'noise multiplier', 'wall time',
                 'accounting', 'status')


def make_report(run_dirs: Sequence[str], out_dir: str) -> dict[str, Any]:
  """Aggregates run folders into a markdown table and plots under ``out_dir``.

  Writes out_dir/report.md (one row per run; sweep folders expand to their
  points), out_dir/accuracy_vs_epsilon.png and, per run with metrics,
  out_dir/<run>_curves.png (test accuracy, epsilon and the non-DP train loss over
  steps).

  Args:
    run_dirs: run or sweep folders.
    out_dir: where the report goes (created).

  Raises:
    ReportError: when no folder holds a run (nothing is written).

  Returns:
    {'report': path of report.md, 'runs': table rows (dicts), 'plots': paths of
    the PNGs written, 'problems': messages naming each missing or corrupt file}.
  """
  problems: list[str] = []
  runs = list(expand_run_dirs(run_dirs, problems))
  if not any(_has_run_files(run_dir) for _, run_dir in runs):
    where = '; '.join(f'{d}: no such folder' if not os.path.isdir(d) else
                      f'{d} holds no run files ({", ".join(run_files.RUN_FILES)})'
                      for d in map(os.fspath, run_dirs))
    raise ReportError(f'--report={",".join(map(os.fspath, run_dirs))}: no run to report '
                      f'({where}); give the --workdir of training runs or sweeps')
  os.makedirs(out_dir, exist_ok=True)
  rows, written = [], []
  curves: dict[str, str] = {}
  for name, run_dir in runs:
    row, metrics = load_run(name, run_dir, problems)
    rows.append(row)
    if metrics:
      path = os.path.join(out_dir, safe_filename(name) + '_curves.png')
      if _plot(plots.plot_run_curves, metrics, path, problems, title=name):
        written.append(path)
        curves[name] = os.path.basename(path)

  eps_path = os.path.join(out_dir, run_files.ACCURACY_VS_EPSILON_PNG)
  # Runs of one model on one dataset form a line, sorted by epsilon.
  points = [dict(row, label=row['run'],
                 group=f"{row['model'] or '?'} on {row['dataset'] or '?'}")
            for row in rows]
  if _plot(plots.plot_accuracy_vs_epsilon, points, eps_path, problems):
    written.append(eps_path)

  for message in problems:
    logging.warning('report: %s', message)
  report_path = os.path.join(out_dir, run_files.REPORT_MD)
  with open(report_path, 'w') as f:
    f.write(_render(rows, problems, curves, written))
  logging.info('Report of %d runs written to %s', len(rows), report_path)
  return {'report': report_path, 'runs': rows, 'plots': written,
          'problems': problems}


def _plot(fn, data, path: str, problems: list[str], **kwargs) -> bool:
  try:
    fn(data, path, **kwargs)
    return True
  except ImportError as e:
    problems.append(f'{path}: not plotted, matplotlib is unavailable ({e})')
  except Exception as e:  # pylint: disable=broad-except
    problems.append(f'{path}: plotting failed ({type(e).__name__}: {e})')
  return False


def _render(rows: list[dict[str, Any]], problems: list[str],
            curves: dict[str, str], written: list[str]) -> str:
  out = ['# Results\n',
         markdown_table(REPORT_HEADER, [_table_row(r) for r in rows]) if rows
         else 'No runs found.\n',
         '',
         'Test accuracy is on the test set; where that set was carved out of the '
         'private training data it is marked "private data, no noise" (released '
         'without noise, outside the guarantee). Epsilon is the spent budget at the '
         'end of the run (accounting: accountant, batch sampling, neighbouring '
         'relation); for a run fine-tuned from earlier runs on the same data, the '
         'total with them follows in brackets, and that total is the guarantee. Runs marked non-private were trained without DP and carry '
         'no privacy guarantee.\n',
         PRIVACY_NOTE + '\n',
         'The train loss in the curves is computed on private data without '
         'noise: it is not covered by the DP guarantee.\n']
  if any(os.path.basename(p) == run_files.ACCURACY_VS_EPSILON_PNG for p in written):
    out.append(f'![accuracy vs epsilon]({run_files.ACCURACY_VS_EPSILON_PNG})\n')
  if curves:
    out.append('## Curves\n')
    out += [f'- {name}: ![{name}]({png})' for name, png in curves.items()]
    out.append('')
  if problems:
    out.append('## Problems\n')
    out += [f'- {p}' for p in problems]
    out.append('')
  return '\n'.join(out)

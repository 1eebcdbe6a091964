"""The files a run leaves in its workdir: their names, and how they are read and written.

The one place that names them; every writer and reader uses these constants.

  config.json          the resolved config
  metrics.jsonl        one JSON object per logged step (step, epsilon, train_loss, ...)
  privacy.json         the privacy plan and what was spent (see image_classification/plan.py)
  privacy.md           the same for a human reviewer
  summary.json         final figures; status 'complete' marks a finished run
  plan.json            written by --dry_run instead of training
  wall_time.json       the wall time of each segment (start or resume) of the run
  mechanism_secret.json  PRIVATE: the mechanism's secret randomness, deleted when the
                       run completes; never published
  audit.json           a canary audit's result
  benchmark.json       --benchmark's timings
  evaluation.json, confusion_matrix.png, predictions.csv   --evaluate / --predict
  export/              model.json, params.msgpack, params.json: the trained model
  selection/           training.select_on_validation: the best evaluation's
                       parameters so far (workdir/selection.py); removed at the end
  sweep.json, sweep.csv, sweep.md, sweep.png   a sweep folder; a failed point keeps
                       its traceback in <point>/sweep_error.txt
  sweep_jobs.json, submitit/   a sweep run by a scheduler: its points' jobs, and
                       submitit's pickled jobs and logs; <point>/sweep_job.json: the
                       job that trains the point (state, host, job id)
  report.md, accuracy_vs_epsilon.png           --report's output folder

JSON files are written atomically (temp file + rename) so that a killed run never
leaves half a file behind; infinite or NaN numbers are written as null.
"""
import json
import math
import os
import re
import tempfile
from typing import Any
from image_classification import errors

# A training run.
CONFIG = 'config.json'
METRICS = 'metrics.jsonl'
PRIVACY = 'privacy.json'
PRIVACY_MD = 'privacy.md'
SUMMARY = 'summary.json'
PLAN = 'plan.json'
WALL_TIME = 'wall_time.json'
MECHANISM_SECRET = 'mechanism_secret.json'
AUDIT = 'audit.json'
BENCHMARK = 'benchmark.json'
# Using a trained run (--evaluate, --predict) and its export.
EVALUATION = 'evaluation.json'
CONFUSION_PNG = 'confusion_matrix.png'
PREDICTIONS = 'predictions.csv'
CHECKPOINTS = 'checkpoints'      # a sub-folder: orbax checkpoints (workdir/checkpoint_store.py)
SELECTION = 'selection'          # a sub-folder while select_on_validation runs
EXPORT = 'export'                # a sub-folder holding the three files below
MODEL_CARD = 'model.json'
PARAMS = 'params.msgpack'
PARAMS_INFO = 'params.json'
# A sweep folder and a report folder.
SWEEP_JSON = 'sweep.json'
SWEEP_CSV = 'sweep.csv'
SWEEP_MD = 'sweep.md'
SWEEP_PNG = 'sweep.png'
SWEEP_ERROR = 'sweep_error.txt'  # in a point's folder: its traceback when it failed
SWEEP_JOB = 'sweep_job.json'     # in a point's folder: the job training it, its state
SWEEP_JOBS = 'sweep_jobs.json'   # the scheduler jobs submitted for a sweep's points
SWEEP_SUBMITIT = 'submitit'      # a sub-folder: submitit's pickled jobs and job logs
REPORT_MD = 'report.md'
ACCURACY_VS_EPSILON_PNG = 'accuracy_vs_epsilon.png'

# The files whose presence makes a folder a training run's.
RUN_FILES = (SUMMARY, METRICS, CONFIG, PRIVACY)


class RunFileError(errors.UserError):
  """A run file is missing or cannot be parsed; the message names the file."""


def json_safe(value):
  """JSON-safe: inf/nan become null, numpy scalars become Python.

  An infinite epsilon (a non-private run) is written as null; the run files say why
  with ``non_private: true``. JSON has no infinity, and a string 'inf' in a number
  field breaks every reader that expects a number or null.
  """
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if hasattr(value, 'item') and not isinstance(value, (str, bytes)):
    try:
      value = value.item()
    except (ValueError, AttributeError):
      pass
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


# write_json's temporary file: tempfile.mkstemp(prefix=f'.{name}.') adds 8 characters.
_WRITE_JSON_TMP = re.compile(r'\..+\.json\.[A-Za-z0-9_]{8}')


def write_json(workdir: str, name: str, data: dict) -> str:
  """Writes ``data`` to workdir/name atomically; returns the path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name)
  fd, tmp = tempfile.mkstemp(dir=workdir, prefix=f'.{name}.')
  with os.fdopen(fd, 'w') as f:
    json.dump(json_safe(data), f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)
  return path


def remove_temporary(folder: str) -> list[str]:
  """Removes the temporary copies that unfinished writes leave in ``folder``
  (write_json's `.NAME.json.XXXXXXXX`, and `*.tmp` files written then renamed);
  returns their paths. Complete files are never touched."""
  removed = []
  if not os.path.isdir(folder):
    return removed
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if os.path.isfile(path) and (_WRITE_JSON_TMP.fullmatch(name)
                                 or name.endswith('.tmp')):
      os.remove(path)
      removed.append(path)
  return removed


def read_json(workdir: str, name: str) -> dict[str, Any]:
  """The JSON object in workdir/name.

  Raises:
    RunFileError: naming the file when it is missing, is not valid JSON, or holds
      something other than an object.
  """
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    raise RunFileError(f'{path}: missing')
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise RunFileError(f'{path}: cannot be read as JSON ({e})') from e
  if not isinstance(value, dict):
    raise RunFileError(f'{path}: expected a JSON object, got {type(value).__name__}')
  return value


def read_metrics(workdir: str) -> tuple[list[dict[str, Any]], list[str]]:
  """The rows of workdir/metrics.jsonl, and the problems met reading it.

  A line that is not a JSON object is skipped and named in the problems (a run
  killed mid-write leaves a truncated last line); the other rows are kept.
  """
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return [], [f'{path}: missing']
  try:
    with open(path) as f:
      lines = f.readlines()
  except OSError as e:
    return [], [f'{path}: cannot be read ({e})']
  rows, problems = [], []
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      row = None
    if not isinstance(row, dict):
      problems.append(f'{path}:{lineno}: not a JSON object, line skipped')
      continue
    rows.append(row)
  return rows, problems


class MetricsWriter:
  """Appends rows to metrics.jsonl, flushing each so a killed run keeps its rows."""

  def __init__(self, workdir: str, truncate_after_step: int | None = None):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, METRICS)
    if truncate_after_step is not None and os.path.exists(self.path):
      # A resumed run drops rows logged after its checkpoint; they will be redone.
      kept = []
      with open(self.path) as f:
        for line in f:
          try:
            row = json.loads(line)
          except json.JSONDecodeError:
            continue
          if row.get('step', 0) <= truncate_after_step:
            kept.append(line if line.endswith('\n') else line + '\n')
      with open(self.path, 'w') as f:
        f.writelines(kept)
    elif truncate_after_step is None and os.path.exists(self.path):
      os.remove(self.path)
    self._file = open(self.path, 'a')

  def write(self, row: dict) -> None:
    self._file.write(json.dumps(json_safe(row), sort_keys=True) + '\n')
    self._file.flush()

  def close(self) -> None:
    self._file.close()

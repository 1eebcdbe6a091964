"""The Python API: train, evaluate and predict from a notebook or a script.

  from image_classification import api
  config = api.config('configs/quickstart.py', overrides={'training.num_steps': 50})
  summary = api.train(config, '/tmp/run1')       # summary.json's content
  result = api.evaluate('/tmp/run1')             # evaluation.json's content
  rows = api.predict('/tmp/run1', ['a.png', 'folder/'])   # one row per image file
  probs = api.load('/tmp/run1').probabilities(images)     # uint8 [N, H, W, C] arrays

Each function runs what the matching launch.py command runs and writes the same run
files (docs/python_api.md). A bad input raises ``api.Error`` whose message is the
command line's `error:` line without the prefix (the original exception is its
__cause__); nothing here exits the process. Running out of memory or disk raises
``api.Error`` too, with the fix (training/resources.py). Ctrl-C during training
checkpoints and raises run_control.Stopped, as on the command line.

Privacy: a run trained here is the same mechanism, with the same secret randomness
(WORKDIR/mechanism_secret.json) and the same reports, as one started with launch.py;
``config.seed`` drives only the initialisation (augmentation and dropout keys come from
the secret too: docs/privacy.md, invariant 18).
"""
import copy
import csv
import functools
import os
from typing import Any, Mapping, Sequence

import ml_collections
from ml_collections.config_flags import config_path
import numpy as np

from configs import base as base_config
from image_classification import config as config_lib
from image_classification import config_file
from image_classification import errors
from image_classification.workdir import run_files
from image_classification.workdir import saved_config as workdir_config
from image_classification import runs
from image_classification.reporting import progress
from image_classification.trained import inference

# Where configs/ lives: a config path that does not exist from the current folder is
# looked up there too.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

class Error(ValueError):
  """A bad config, workdir, dataset or image, or a run out of memory or disk: the
  message names the field or file and the fix (the command line's `error:` line)."""


def _user_errors(function):
  """Re-raises the platform's user errors as api.Error, keeping the message."""
  @functools.wraps(function)
  def wrapper(*args, **kwargs):
    try:
      return function(*args, **kwargs)
    except errors.UserError as e:  # a complete `error:` line on the command line
      raise Error(str(e)) from e
  return wrapper


# ------------------------------------------------------------------------ config
def _resolve(spec: str) -> str:
  """'FILE[:ARG]' with FILE looked up in the repository when it is not found here."""
  path, sep, arg = spec.partition(':')
  here = os.path.exists(path) or os.path.isdir(os.path.dirname(path) or '.')
  there = os.path.join(REPOSITORY, path)
  if not os.path.isabs(path) and not os.path.exists(path) and (
      os.path.exists(there) or not here):
    return there + sep + arg
  return spec


def _under_open_group(path: str) -> bool:
  return any(path == g or path.startswith(g + '.') for g in base_config.OPEN_GROUPS)


def _apply(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
           spec: str) -> None:
  """Sets each dotted field as --config.PATH=VALUE would, with the same messages."""
  for path, value in overrides.items():
    if not isinstance(path, str) or not path:
      raise Error(f'overrides: field names are dotted strings, got {path!r}')
    if config_file.missing_field(config, path) is not None:
      if not _under_open_group(path):
        raise Error(config_file.override_error(config, spec, path,
                                               base_config.OPEN_GROUPS))
      parent, _, key = path.rpartition('.')
      config_path.get_value(parent, config)[key] = value  # a new model kwarg
      continue
    current = config_path.get_value(path, config)
    if isinstance(current, ml_collections.ConfigDict):
      if not (_under_open_group(path) and isinstance(value, Mapping)):
        raise Error(f'--config.{path}: a group of fields; set its fields one by one')
      value = ml_collections.ConfigDict(dict(value))
    try:
      config_path.set_value(path, config, value)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
      raise Error(f'--config.{path}={value!r}: {e}') from e


def config(path_or_config: str | ml_collections.ConfigDict,
           overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """A config file's config, loaded and checked as ``launch.py --config=`` loads it
  ('configs/quickstart.py', or with its argument 'configs/cifar10_wrn_16_4.py:eps=1';
  it may set only configs/base.py's fields), or a copy of a ConfigDict, with
  ``overrides`` ({'training.num_steps': 10, ...}) applied as --config.a.b=v would be:
  only fields the config defines, of the type the field holds. Under model.kwargs
  (the model's keyword arguments, configs/base.py's OPEN_GROUPS) any field may be set,
  and 'model.kwargs' itself may be a whole dict, e.g. for your own model:
  {'model.name': 'my_model.py:MyModel', 'model.kwargs': {'width': 8}}. The result is
  locked: setting a field it does not have (a typo) raises instead of adding one.
  Raises api.Error with the command line's message (the file, the field, the closest
  names).
  """
  if isinstance(path_or_config, ml_collections.ConfigDict):
    result, spec = copy.deepcopy(path_or_config), 'the config'
  elif isinstance(path_or_config, str):
    spec = path_or_config
    try:
      result = config_file.load(_resolve(spec), base_config.get_config(),
                                base_config.OPEN_GROUPS)
    except config_file.ConfigFileError as e:
      raise Error(str(e)) from e
  else:
    raise Error(f'api.config takes a config file path or an ml_collections '
                f'ConfigDict, not {type(path_or_config).__name__}')
  result.unlock()
  _apply(result, dict(overrides or {}), spec)
  result.lock()
  return result


_config = config  # for the functions below whose argument is called config


# ------------------------------------------------------------------------ train
@_user_errors
def train(config: ml_collections.ConfigDict | str, workdir: str,
          dry_run: bool = False) -> dict:
  """Trains (or resumes, or reports a finished run in) ``workdir``, exactly as
  ``launch.py --config=... --workdir=...``; returns summary.json's content, or with
  ``dry_run`` plan.json's (nothing trained). ``config``: a ConfigDict (see
  ``api.config``) or a config file path. The audit the config asks for runs too."""
  if isinstance(config, str):
    config = _config(config)
  config_lib.check_workdir(workdir)
  progress.quiet_library_logs()
  return runs.train(config, workdir, dry_run=dry_run)


# ------------------------------------------------------------------------ use
def _workdir_config(workdir: str,
                    overrides: Mapping[str, Any] | None) -> ml_collections.ConfigDict:
  try:
    saved = workdir_config.get_config(workdir)
  except FileNotFoundError as e:
    raise Error(f'{workdir!r} holds no config.json: it is not the workdir of a '
                'training run (api.train(config, workdir) writes it)') from e
  except run_files.RunFileError as e:  # a field configs/base.py does not define
    raise Error(str(e)) from e
  return _config(saved, overrides)


@_user_errors
def evaluate(workdir: str, overrides: Mapping[str, Any] | None = None) -> dict:
  """Evaluates the run's exported parameters on the test split of its dataset, as
  ``launch.py --evaluate=WORKDIR``; ``overrides`` apply to the run's own config
  (e.g. {'data.path': ...}). Writes evaluation.json and confusion_matrix.png and
  returns evaluation.json's content (top1, top5, per_class_accuracy, ...)."""
  return inference.evaluate_workdir(workdir, _workdir_config(workdir, overrides))


@_user_errors
def load(workdir: str) -> inference.TrainedModel:
  """The run's trained model: ``.probabilities(images)`` / ``.logits(images)`` on
  uint8 [N, H, W, C] arrays in the trained shape, ``.class_names``, ``.params``."""
  return inference.load(workdir, _workdir_config(workdir, None))


@_user_errors
def predict(workdir: str, images: str | Sequence[str] | np.ndarray,
            output: str | None = None) -> list[dict]:
  """Classifies images with the run's model.

  ``images``: image files and/or folders (a path or a list of paths), as
  ``launch.py --predict``: one row per file with file, class, probability, warning
  (aspect ratio or channels differ from the training images) and error (the file
  could not be read; the others are still classified), written as CSV to
  ``output`` when given. Or an array of uint8 images [N, H, W, C] in the trained
  shape: one row per image with index, class and probability (also written to
  ``output`` when given).
  """
  if isinstance(images, np.ndarray) or (
      hasattr(images, 'shape') and hasattr(images, 'dtype')):
    model = load.__wrapped__(workdir)
    probs = model.probabilities(images)
    names = model.class_names
    rows = [{'index': i, 'class': names[int(np.argmax(p))],
             'probability': float(np.max(p))} for i, p in enumerate(probs)]
    if output:
      with open(output, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=['index', 'class', 'probability'])
        writer.writeheader()
        writer.writerows(rows)
    return rows
  paths = [images] if isinstance(images, str) else list(images)
  return inference.predict(workdir, paths, out_path=output,
                           config=_workdir_config(workdir, None))

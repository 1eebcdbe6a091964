"""The config a workdir was trained with, as a config file for ml_collections:

  python launch.py --config=image_classification/workdir/saved_config.py:/tmp/run1 ...

reads /tmp/run1/config.json (JSON turns tuples into lists and inf into 'inf'; both
are turned back) and lays it over configs/base.py's defaults, so that a default is
written once: a field the file lacks (a run of an older version) takes base's value,
and a field base does not define, outside base's open groups (model.kwargs, ...), is
refused with its name. launch.py uses it for --evaluate and --predict, so that
--config.data.path=... and other overrides apply to the run's own config.
"""
import json
import os

import ml_collections

from configs import base
from image_classification.workdir import run_files


def _restore(value):
  if isinstance(value, dict):
    return {k: _restore(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_restore(v) for v in value)
  if value in ('inf', '-inf', 'nan'):
    return float(value)
  return value


def _overlay(config: ml_collections.ConfigDict, saved: dict, prefix: str = '') -> list:
  """Sets ``saved``'s fields on ``config`` in place; returns the dotted paths of the
  fields ``config`` does not define (outside base.OPEN_GROUPS)."""
  unknown = []
  for key, value in saved.items():
    path = prefix + key
    if key not in config:
      unknown.append(path)
    elif path in base.OPEN_GROUPS:
      config[key] = ml_collections.ConfigDict(value)
    elif isinstance(config[key], ml_collections.ConfigDict) and isinstance(value, dict):
      unknown += _overlay(config[key], value, path + '.')
    else:
      try:
        config[key] = value
      except TypeError as e:
        raise run_files.RunFileError(f'config.json: config.{path}={value!r} does not fit '
                                     f"configs/base.py's field ({e})") from e
  return unknown


def overlay(saved: dict, where: str = 'config.json') -> ml_collections.ConfigDict:
  """base.get_config() with the fields of ``saved`` (config.json's content) set on it.

  Raises RunFileError naming the fields base does not define.
  """
  config = base.get_config()
  unknown = _overlay(config, _restore(saved))
  if unknown:
    raise run_files.RunFileError(
        f'{where} sets {", ".join("config." + u for u in unknown)}, which '
        'configs/base.py does not define: a run of another version of the platform; '
        'use that version, or remove the field from the file')
  return config


def get_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, run_files.CONFIG)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not the workdir of '
                            'a training run')
  with open(path) as f:
    return overlay(json.load(f), path)

"""The config a workdir was trained with, as a config file for ml_collections:

  python launch.py --config=image_classification/workdir/saved_config.py:/tmp/run1 ...

reads /tmp/run1/config.json (JSON turns tuples into lists and inf into 'inf'; both
are turned back). launch.py uses it for --evaluate and --predict, so that
--config.data.path=... and other overrides apply to the run's own config.
"""
import json
import os

import ml_collections

from image_classification.workdir import run_files


def _restore(value):
  if isinstance(value, dict):
    return {k: _restore(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_restore(v) for v in value)
  if value in ('inf', '-inf', 'nan'):
    return float(value)
  return value


def get_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, run_files.CONFIG)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not the workdir of '
                            'a training run')
  with open(path) as f:
    config = ml_collections.ConfigDict(_restore(json.load(f)))
  return config

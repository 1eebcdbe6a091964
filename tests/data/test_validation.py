"""The validation split: the plan's N excludes it (also in a dry run, where only the
published size is known), the privacy report lists its accuracy as computed without
noise, and older workdirs without the field still resume."""
import json

import numpy as np
import pytest

from configs import mnist_eps3
from configs import quickstart
from image_classification.data import base
from image_classification.data.readers import digits
from image_classification.data import validation
from image_classification.workdir import run_files
from image_classification.training import experiment
from image_classification.training import loop
from image_classification.workdir import resume


def test_dry_run_plan_excludes_the_validation_split(tmp_path):
  config = mnist_eps3.get_config()
  config.data.validation_fraction = 0.1
  plan = loop.train(config, str(tmp_path), dry_run=True)  # no data is read
  assert plan['dataset_size'] == 54_000 and plan['validation_size'] == 6_000
  assert 'validation_accuracy' in plan['computed_without_noise']


def test_plan_excludes_the_validation_split_of_real_data():
  config = quickstart.get_config()
  config.data.validation_fraction = 0.25
  exp = experiment.Experiment(config)
  assert exp.dataset_size + exp.validation.num_examples == \
      digits.load().train.num_examples
  assert exp.plan.dataset_size == exp.dataset_size
  held = set(map(bytes, exp.validation.images))
  assert not held & set(map(bytes, exp.data.train.images))  # digits are distinct


def test_bad_fractions_are_refused():
  splits = digits.load()
  for fraction in (1.0, -0.1):
    with pytest.raises(base.DataError, match='validation_fraction'):
      validation.hold_out(splits, fraction)
  assert validation.hold_out(splits, 0.0) == (splits, None)


def test_an_older_workdir_without_the_field_still_matches():
  config = quickstart.get_config()
  saved = json.loads(json.dumps(run_files.json_safe(config.to_dict())))  # as config.json
  del saved['data']['validation_fraction']
  assert resume.config_differences(saved, config) == []
  config.data.validation_fraction = 0.1
  assert resume.config_differences(saved, config) == [
      'config.data.validation_fraction: absent in the workdir, 0.1 now']


def test_subset_reads_through_to_its_source():
  class Recording:
    num_examples, image_shape = 10, (1, 1, 1)
    def __init__(self):
      self.calls = []
    def get(self, indices, **kwargs):
      self.calls.append((list(indices), kwargs))
      return indices, indices
  source = Recording()
  subset = validation.Subset(source, np.array([7, 3, 5]))
  assert subset.num_examples == 3
  subset.get(np.array([2, 0]), step=4)
  assert source.calls == [([5, 7], {'step': 4})]

"""The audit through the real training loop: audit.json, and the figures of the two
shipped audit configs (slow: they train for real)."""
import json
import os

import pytest

from configs import quickstart_audit
from configs import quickstart_audit_nonprivate
from image_classification import runs
from image_classification.data.readers import digits


def _shrunk(config, steps):
  config.training.num_steps = steps
  config.training.log_every_steps = steps
  config.training.eval_every_steps = 0
  config.wandb.mode = 'disabled'
  config.audit.num_canaries = 100
  return config


def test_audit_json_from_the_loop(tmp_path):
  summary = runs.train(_shrunk(quickstart_audit.get_config(), 4), str(tmp_path))
  with open(tmp_path / 'audit.json') as f:
    audit = json.load(f)
  for key in ('epsilon_lower_bound', 'epsilon', 'delta', 'num_canaries', 'confidence',
              'method'):
    assert key in audit, key
  assert audit['num_canaries'] == 100
  assert audit['epsilon'] == pytest.approx(summary['epsilon'])
  assert summary['audit_epsilon_lower_bound'] == audit['epsilon_lower_bound']
  with open(tmp_path / 'privacy.json') as f:
    privacy = json.load(f)
  # The accountant's N includes the included canaries (and excludes the others).
  included = audit['score_summary']['included']['count']
  assert privacy['dataset_size'] == digits.load().train.num_examples - 100 + included


@pytest.mark.slow
@pytest.mark.parametrize('module,private', [(quickstart_audit, True),
                                            (quickstart_audit_nonprivate, False)])
def test_shipped_audit_configs(tmp_path, module, private):
  config = module.get_config()
  config.wandb.mode = 'disabled'
  runs.train(config, str(tmp_path))
  with open(os.path.join(tmp_path, 'audit.json')) as f:
    audit = json.load(f)
  if private:
    assert audit['epsilon_lower_bound'] <= audit['epsilon']
  else:
    assert audit['epsilon'] is None and audit['non_private']
    assert audit['epsilon_lower_bound'] > 1.0

"""The white-box gradient audit of the quickstart at epsilon 4, deterministic (seeded
noise and batches): its bound stays at or below the accountant's epsilon. Planted
through tests/mutation_check.py, a trainer that adds half the noise, one that samples
2B, and clipping at 2C each push it above (docs/testing.md, results/audit.md).

Slow (one audited training run, about a minute on an idle 2-core CPU): run with
`python -m pytest -q -m slow tests/audit/test_gradient_audit_detection.py`.
"""
import json

import pytest

from configs import quickstart_audit_gradient
from image_classification import runs


@pytest.mark.slow
def test_seeded_gradient_audit_of_the_quickstart_stays_below_its_epsilon(tmp_path):
  config = quickstart_audit_gradient.get_config('eps=4')
  config.privacy.insecure_seeded_noise = True  # the same run, hence bound, every time
  config.wandb.mode = 'disabled'
  summary = runs.train(config, str(tmp_path))
  with open(tmp_path / 'audit.json') as f:
    audit = json.load(f)
  print(f'gradient audit: bound {audit["epsilon_lower_bound"]:.3f} vs epsilon '
        f'{audit["epsilon"]:.3f}')
  assert audit['mode'] == 'gradient' and audit['steps_observed'] == 200
  assert summary['audit_epsilon_lower_bound'] == audit['epsilon_lower_bound']
  assert not audit['bound_exceeds_accountant']
  assert audit['epsilon_lower_bound'] <= audit['epsilon']

"""Quickstart with the one-run privacy audit on: DP-SGD at epsilon = 4 on digits, with
mislabelled canaries, then an epsilon LOWER bound (Steinke, Nasr & Jagielski 2023).

  python launch.py --config=configs/quickstart_audit.py --workdir=/tmp/audit_dp

500 of the 1438 training digits become canaries: each is taken out of the training
set, given a fixed random wrong label, and put back with probability 1/2, so the run
trains on N ~ 938 + 250 examples (the accountant counts them). WORKDIR/audit.json holds
the bound. At epsilon 4 it comes out near 0: on this scale the audit has little power
against a private run, and the bound must never exceed the accountant's epsilon; a
bound above it would be evidence of a privacy bug. configs/quickstart_audit_nonprivate.py
is the same run without noise, the positive control, whose bound comes out well above
1. The measured bounds, test accuracies and run times (seeds 0-2, with the date they
were measured) are in docs/audit.md's table and results/README.md; they are not
repeated here so that they cannot go stale.

This config trains with the quickstart's DP recipe (its test accuracy is below the
quickstart's because about a fifth of the training labels are canaries' wrong ones);
the non-private control uses a memorising recipe (see that file).
"""
from configs import quickstart


def get_config():
  config = quickstart.get_config()
  config.experiment = 'quickstart_audit'
  config.audit.enabled = True
  config.audit.canary_type = 'mislabeled'
  config.audit.num_canaries = 500
  config.audit.confidence = 0.95
  config.privacy.target_epsilon = 4.0
  config.privacy.delta = 1e-5
  # Add/remove adjacency: the relation the audit tests (see image_classification/audit/statistics.py).
  config.privacy.sampling = 'poisson'
  # The quickstart's tuned DP recipe (model, clipping, batch, steps, optimizer, EMA),
  # so the audited model is a well-trained private model (the non-private config's
  # memorising recipe diverges under noise). The documented bounds were measured with
  # it: tests/test_config_builders.py freezes this config, so retuning the quickstart
  # fails there; pin the old values here then.
  config.training.log_every_steps = 100
  config.training.eval_every_steps = 0
  return config

"""The quickstart with the white-box gradient audit: DP-SGD on digits, 5000 Dirac
gradient canaries in the head's kernel, an epsilon LOWER bound from every step's
privatized update (docs/audit.md).

  python launch.py --config=configs/quickstart_audit_gradient.py --workdir=/tmp/ga
  python launch.py --config=configs/quickstart_audit_gradient.py:eps=8 --workdir=/tmp/ga8

Arguments (configs/common.py's parser): eps (the target epsilon, default 4), m (the
number of canaries, default 5000: the head kernel has 10240 coordinates).

Each canary is included with probability 1/2 and then sampled like any example, so
the accountant counts N = 1437 + (about m/2) examples and the sampling rate q = 512/N
is lower than the quickstart's (0.13 instead of 0.36, with sigma calibrated to the
same epsilon). The recipe is the quickstart's otherwise (model, clipping, batch 512,
200 steps, SGD with momentum, EMA, the RDP accountant). About 60% of every batch are
canaries, and the canaries move head weights: do not report an audited run's accuracy
as the quickstart's. The measured bounds and run times are in results/audit.md.
"""
from configs import common
from configs import quickstart


def get_config(arg=None):
  args = common.parse_arg(arg, eps=4.0, m=5000)
  config = quickstart.get_config()
  config.experiment = f'quickstart_audit_gradient_{common.eps_name(args.eps)}'
  config.privacy.target_epsilon = args.eps
  # Add/remove adjacency: the relation the audit tests.
  config.privacy.sampling = 'poisson'
  config.audit.enabled = True
  config.audit.mode = 'gradient'
  config.audit.num_canaries = args.m
  config.audit.confidence = 0.95
  config.audit.analysis = 'fdp'
  config.audit.score = 'llr'
  config.training.log_every_steps = 50
  config.training.eval_every_steps = 0
  return config

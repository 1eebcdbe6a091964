"""Quickstart with BandMF (banded matrix factorisation, Choquette-Choo et al. 2023):
the same small CNN on scikit-learn's 8x8 digits at epsilon = 4, delta = 1e-5, with
noise correlated over b = num_bands steps and cyclic Poisson sampling (the examples are
split into b groups; step t samples group t mod b).

  python launch.py --config=configs/quickstart_bandmf.py --workdir=/tmp/qs_bandmf
  # DP-SGD with the same steps and batch (b = 1 is DP-SGD exactly):
  python launch.py --config=configs/quickstart_bandmf.py \
      --config.privacy.num_bands=1 --workdir=/tmp/qs_dpsgd

Differences from configs/quickstart.py, for BandMF's sake: the expected batch is 256,
not 512 (b groups of about N/b examples must each hold a batch: b <= N/B = 5 here, and
only b <= 2 at batch 512); everything else is the quickstart's. b must divide the 200
steps. How b = 2 / 4 compare with b = 1 at epsilon 1, 2, 4 is measured in
results/bandmf.md (configs/sweeps/quickstart_bandmf.py).
"""
from configs import common
from configs import quickstart


def get_config():
  config = common.bandmf(quickstart.get_config(), 'quickstart_bandmf', num_bands=2)
  config.training.batch_size = 256  # b <= N/B (see above)
  return config

"""BandMF against DP-SGD on the quickstart: b in {1, 2, 4} (b = 1 is DP-SGD exactly)
at target epsilon 1, 2, 4, three runs each (seeds 0, 1, 2; every run draws fresh secret
noise and batches).

  python launch.py --config=configs/quickstart_bandmf.py \
      --sweep=configs/sweeps/quickstart_bandmf.py --workdir=/tmp/qs_bandmf_sweep

b = 5 is also allowed (b <= N/B = 5) but does not divide the 200 steps.
Results: results/bandmf.md.
"""
from image_classification import sweeps


def get_sweep() -> list[dict]:
  # Seeds outermost: each replicate of the whole grid finishes before the next starts.
  return sweeps.grid({'seed': [0, 1, 2], 'privacy.target_epsilon': [1.0, 2.0, 4.0],
                      'privacy.num_bands': [1, 2, 4]})

"""The number of bands b of configs/mnist_eps3_bandmf.py at epsilon 1, 2, 4 (b = 1 is
DP-SGD with the same 2400 steps and batch 1024), three runs each. About 12+ minutes a
run on a 2-core CPU: 54 runs, so run it on an accelerator or trim the grid.

  python launch.py --config=configs/mnist_eps3_bandmf.py \
      --sweep=configs/sweeps/mnist_bandmf.py --workdir=/tmp/mnist_bandmf_sweep
"""
from image_classification import sweeps


def get_sweep() -> list[dict]:
  return sweeps.grid({'privacy.target_epsilon': [1.0, 2.0, 4.0],
                      'privacy.num_bands': [1, 4, 8, 16, 32, 48], 'seed': [0, 1, 2]})

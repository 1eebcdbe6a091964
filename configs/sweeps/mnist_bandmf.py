"""The number of bands b of configs/mnist_eps3_bandmf.py at epsilon 1 and 3 (b = 1 is
DP-SGD with the same 2400 steps and expected batch 1024), three seeds each: 24 runs of
about 12 minutes alone (20 minutes two at a time) on a 2-core CPU.

results/bandmf.md ran the part of this grid that jax-privacy's error objective picks
(results/bandmf_predict.py): b = 1 and 2 at epsilon 1, b = 1 and 4 at epsilon 3. The
full grid:

  python launch.py --config=configs/mnist_eps3_bandmf.py \
      --sweep=configs/sweeps/mnist_bandmf.py --workdir=/tmp/mnist_bandmf_sweep
"""
from image_classification import sweeps


def get_sweep() -> list[dict]:
  return sweeps.grid({'privacy.target_epsilon': [1.0, 3.0],
                      'privacy.num_bands': [1, 2, 4, 8], 'seed': [0, 1, 2]})

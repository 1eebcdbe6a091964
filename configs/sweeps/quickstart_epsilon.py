"""The quickstart at target epsilon 1, 2, 4 and 8.

  python launch.py --config=configs/quickstart.py \
      --sweep=configs/sweeps/quickstart_epsilon.py --workdir=/tmp/quickstart_eps

Each point calibrates its own noise multiplier to reach its target epsilon at
the end of training. The sweep writes sweep.md / sweep.csv / sweep.png (accuracy
against the spent epsilon) into the workdir.
"""
from image_classification import sweeps


def get_sweep() -> list[dict]:
  return sweeps.grid({'privacy.target_epsilon': [1.0, 2.0, 4.0, 8.0]})

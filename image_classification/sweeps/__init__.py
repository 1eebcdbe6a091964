"""Hyperparameter sweeps: a base config and a list of override points, run one after
another, each in its own sub-folder of the sweep's workdir.

A sweep file is a Python file with ``get_sweep()`` returning a list of points; a
point maps dotted config paths to values::

  from image_classification import sweeps

  def get_sweep():
    return sweeps.product(
        sweeps.grid({'privacy.target_epsilon': [1.0, 8.0],
                     'training.batch_size': [256, 1024]}),
        sweeps.zipped({'training.optimizer.learning_rate': [1.0, 2.0],
                       'training.num_steps': [500, 1000]}))

  python launch.py --config=configs/x.py --sweep=that_file.py --workdir=DIR [--print_only]

The points run one after another in this process (runner.py), or as scheduler jobs:
``--sweep_executor=slurm|local``, ``--sweep_point=I`` for any other scheduler, and
``--report_only`` for the table while they run (cluster.py, resources.py; each job
goes through point_job.py).

This package imports no JAX (a sweep file and launch.py's flags import it): the
runner, the executors and the table are in runner.py, cluster.py and summary.py.

Privacy: every point is its own DP-SGD run with its own (epsilon, delta) and its own
secret randomness (a workdir each). Choosing among the points by an accuracy measured
on private data is a further use of that data which the per-run epsilons do not count.
"""
from image_classification.sweeps.points import grid
from image_classification.sweeps.points import point_name
from image_classification.sweeps.points import Point
from image_classification.sweeps.points import product
from image_classification.sweeps.points import SweepError
from image_classification.sweeps.points import zipped
from image_classification.sweeps.overrides import apply_overrides
from image_classification.sweeps.sweep_file import load_sweep

"""MNIST, end-to-end tanh CNN, BandMF at (epsilon=3, delta=1e-5).

configs/mnist_eps3_end_to_end.py (DP-SGD, 98.07%) with banded matrix factorisation instead of
independent noise (Choquette-Choo et al. 2023, "(Amplified) Banded Matrix
Factorization"): the noise of each step is correlated with the previous b-1 steps' so
that much of it cancels in the model, and cyclic Poisson sampling (b groups of about
N/b examples, step t samples group t mod b) keeps every example out of any b
consecutive steps. The noise multiplier is calibrated with jax-privacy's
amplified_bandmf_event.

The number of steps is set to 2400 (41 epochs at batch 1024) rather than derived from
40 epochs (2344 = 8 x 293 steps), because b must divide the number of steps; 2400 has
many divisors. b = 8 is a starting point, NOT a measured optimum: jax-privacy's error
objective (results/bandmf_predict.py) picks b = 2 at epsilon 1 and b = 4-8 at epsilon
3-4. Compare with
  python launch.py --config=configs/mnist_eps3_bandmf.py \
      --config.privacy.num_bands=1 --workdir=/tmp/mnist_dpsgd_2400
which is DP-SGD exactly with the same steps and batch, or sweep b with
configs/sweeps/mnist_bandmf.py. Measured (results/bandmf.md, three runs each, same
learning rate for every b): no gain over DP-SGD at epsilon 1 (b = 2) or 3 (b = 4),
every difference inside the run-to-run spread. b can be at most N / batch = 58 here.

  python launch.py --config=configs/mnist_eps3_bandmf.py --workdir=/tmp/mnist_bandmf
"""
from configs import common
from configs import mnist_eps3_end_to_end


def get_config():
  config = common.bandmf(mnist_eps3_end_to_end.get_config(), 'mnist_eps3_bandmf', num_bands=8)
  # b must divide the number of steps: 2400, not 40 epochs (see above).
  config.training.num_epochs = 0.0
  config.training.num_steps = 2400
  return config

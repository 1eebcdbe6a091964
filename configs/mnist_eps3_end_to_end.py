"""MNIST, end-to-end tanh CNN, DP-SGD at (epsilon=3, delta=1e-5) (the recipe of
configs/mnist_eps3.py until issue 24; the ScatterNet recipe replaced it there).

The setting of Tramer & Boneh 2021, "Differentially Private Learning Needs Better
Features (or Much More Data)", ICLR 2021: their end-to-end CNN reaches 98.1% test
accuracy on MNIST at (3, 1e-5). Hyperparameters from their code release
(github.com/ftramer/Handcrafted-DP, README "End-to-end CNNs" and cnns.py):
  python3 cnns.py --dataset=mnist --batch_size=512 --lr=0.5 --noise_multiplier=1.23
with cnns.py's defaults SGD momentum 0.9, max_grad_norm (C) 0.1, and the noise
multiplier computed so that the budget is spent after 40 epochs.

Two departures from that command, both measured (results/mnist_eps3.md, seed 0 unless
said): the expected batch is 1024 with the learning rate scaled linearly to 1.0 (still
40 epochs), following De et al. 2022's finding that larger batches help at a fixed
budget, and which Tramer & Boneh themselves use for Fashion-MNIST (batch 2048); and the
CNN is initialised as their PyTorch code was (uniform +-1/sqrt(fan_in) weights and
biases, model.kwargs.init_scheme='torch'), not with Flax's LeCun normal.
  batch 1024, torch init (shipped): 0.9807 / 0.9817 / 0.9831 on seeds 0 / 1 / 2
  batch 512, torch init (their exact setting): 0.9806 / 0.9797 / 0.9807
  batch 1024, LeCun init: 0.9797;  batch 512, LeCun init: 0.9782
Restore their setting with --config.training.batch_size=512
--config.training.optimizer.learning_rate=0.5.

The noise multiplier is left None: the trainer calibrates it so that 40 epochs of
Poisson-sampled batches (RDP accountant) spend exactly epsilon=3: sigma ~1.447 at
expected batch 1024 (~1.124 at 512). Their 1.23 (for batch 512) comes from the same
calibration with the classic, looser RDP-to-(epsilon, delta) conversion
eps = RDP(alpha) + log(1/delta) / (alpha - 1); dp-accounting's tighter conversion
credits sigma=1.23 at batch 512 with epsilon 2.58 only. The target they calibrated to
is epsilon=3, so calibrating here is the faithful choice.

Measured here: 0.9807 at epsilon 3.000 in 12 min on a 2-core CPU.

  python launch.py --config=configs/mnist_eps3_end_to_end.py --workdir=/tmp/mnist_eps3_end_to_end
  # the original IDX files instead of tfds:
  python launch.py --config=configs/mnist_eps3_end_to_end.py \
      --config.data.path=/path/to/mnist --workdir=/tmp/mnist_eps3_end_to_end
"""
from configs import common


def get_config():
  # Sigma calibrated: ~1.447 at batch 1024. Theirs: batch 512 with lr 0.5.
  return common.tramer_boneh('mnist_eps3_end_to_end', 'mnist', batch_size=1024, learning_rate=1.0,
                             log_every_steps=100, eval_every_steps=500)

"""MNIST, end-to-end tanh CNN, DP-SGD at (epsilon=3, delta=1e-5).

The setting of Tramer & Boneh 2021, "Differentially Private Learning Needs Better
Features (or Much More Data)", ICLR 2021: their end-to-end CNN reaches 98.1% test
accuracy on MNIST at (3, 1e-5). Hyperparameters from their code release
(github.com/ftramer/Handcrafted-DP, README "End-to-end CNNs" and cnns.py):
  python3 cnns.py --dataset=mnist --batch_size=512 --lr=0.5 --noise_multiplier=1.23
with cnns.py's defaults SGD momentum 0.9, max_grad_norm (C) 0.1, and the noise
multiplier computed so that the budget is spent after 40 epochs.

The noise multiplier is left None: the trainer calibrates it so that 40 epochs of
Poisson-sampled batches (expected size 512, RDP accountant) spend exactly epsilon=3,
which gives sigma ~1.12 with dp-accounting's RDP. Their 1.23 comes from the same
calibration with the classic, looser RDP-to-(epsilon, delta) conversion
eps = RDP(alpha) + log(1/delta) / (alpha - 1); dp-accounting's tighter conversion
credits sigma=1.23 with epsilon 2.58 only. The target they calibrated to is
epsilon=3, so calibrating here is the faithful choice.

Measured here: 0.9782 at epsilon 3.000 in 16 min on a 2-core CPU. Larger batches at the
same 40 epochs do better: --config.training.batch_size=1024
--config.training.optimizer.learning_rate=1.0 gives 0.9797 (results/mnist_eps3.md, with
the other variants tried: a parameter EMA does not help, a cosine decay hurts).

  python launch.py --config=configs/mnist_eps3.py --workdir=/tmp/mnist_eps3
  # the original IDX files instead of tfds:
  python launch.py --config=configs/mnist_eps3.py \
      --config.data.path=/path/to/mnist --workdir=/tmp/mnist_eps3
"""
from configs import base


def get_config():
  config = base.get_config()
  config.experiment = 'mnist_eps3'
  config.data.name = 'mnist'
  config.model.name = 'tanh_cnn'  # Tramer & Boneh's end-to-end CNN (about 26k params).
  config.privacy.target_epsilon = 3.0
  config.privacy.delta = 1e-5
  config.privacy.noise_multiplier = None  # calibrated: ~1.12 (paper: 1.23, looser conversion)
  config.privacy.clipping_norm = 0.1
  config.training.batch_size = 512
  config.training.num_epochs = 40.0
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = 0.5
  config.training.optimizer.momentum = 0.9
  config.training.log_every_steps = 100
  config.training.eval_every_steps = 500
  return config

"""Quickstart: a small CNN on scikit-learn's 8x8 digits (ships with the package, no
download) with DP-SGD at epsilon = 4, delta = 1e-5. About a minute on a laptop CPU.

  python launch.py --config=configs/quickstart.py --workdir=/tmp/run1
"""
from configs import base


def get_config():
  config = base.get_config()
  config.experiment = 'quickstart'
  config.data.name = 'digits'
  config.model.name = 'cnn'
  config.model.kwargs.channels = (32, 64)
  config.model.kwargs.activation = 'tanh'
  config.privacy.target_epsilon = 4.0
  config.privacy.delta = 1e-5
  config.privacy.clipping_norm = 1.0
  config.training.batch_size = 256
  config.training.num_steps = 300
  config.training.optimizer.name = 'sgd'
  config.training.optimizer.learning_rate = 2.0
  config.training.optimizer.momentum = 0.9
  config.training.ema.decay = 0.99
  config.training.log_every_steps = 20
  config.training.eval_every_steps = 100
  return config

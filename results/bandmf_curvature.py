"""Why the prefix-sum objective can overrate BandMF: parameter noise on a quadratic.

Takes finished workdirs (the first DP-SGD, the others BandMF, all of the same shape) and
reads from each privacy.json the noise multiplier, the clipping norm and the strategy.
For a loss with curvature h along one direction, trained like the run's config (SGD with
learning rate LR and momentum BETA on the clipped sum divided by the expected batch
BATCH), it prints the std of the parameter noise after the last step for each run, and
its ratio to DP-SGD's. h = 0 is the prefix-sum workload the strategy was optimised for;
the larger h, the more the loss pulls the parameters back, and the more of the noise
that matters is high-frequency, where BandMF's correlated noise is LARGER than DP-SGD's.

  python results/bandmf_curvature.py DPSGD_WORKDIR BANDMF_WORKDIR [...] \
      [--lr=1.0 --momentum=0.9 --batch=1024]
"""
import argparse
import json
import os

import numpy as np
from scipy import signal


def inverse_response(coefs, n):
  """Impulse response of C^-1 for the banded Toeplitz strategy with these coefficients
  (the noise BandMF adds is C^-1 z): the all-pole filter 1 / C(z)."""
  impulse = np.zeros(n)
  impulse[0] = 1.0
  return signal.lfilter([1.0], np.asarray(coefs, np.float64) / np.linalg.norm(coefs),
                        impulse)


def parameter_response(h, n, lr, beta, batch):
  """The parameter after t steps for a unit of noise in the summed gradient at step 0:
  m <- beta m + h p + noise / batch; p <- p - lr m."""
  p = m = 0.0
  g = np.zeros(n)
  for t in range(n):
    m = beta * m + h * p + (1.0 / batch if t == 0 else 0.0)
    p -= lr * m
    g[t] = p
  return g


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--lr', type=float, default=1.0)
  parser.add_argument('--momentum', type=float, default=0.9)
  parser.add_argument('--batch', type=int, default=1024)
  args = parser.parse_args()
  runs = []
  for w in args.workdirs:
    with open(os.path.join(w, 'privacy.json')) as f:
      runs.append(json.load(f))
  n = runs[0]['steps']
  print('h       ' + '  '.join(
      f"b={len(r.get('strategy_coefs') or [1])} (sigma {r['noise_multiplier']:.3f})"
      for r in runs))
  responses = [inverse_response(r.get('strategy_coefs') or [1.0], n) for r in runs]
  for h in (0.0, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0):
    g = parameter_response(h, n, args.lr, args.momentum, args.batch)
    stds = [r['noise_multiplier'] * r['clipping_norm'] * np.linalg.norm(np.convolve(g, x)[:n])
            for r, x in zip(runs, responses)]
    print(f'{h:<7g} ' + '  '.join(f'{s:.3g} ({s / stds[0]:.2f}x)' for s in stds))


if __name__ == '__main__':
  main()

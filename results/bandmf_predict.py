"""Which number of bands b should win, before training: jax-privacy's own objective.

For each target epsilon (1, 2, 4 unless EPSILONS is given; delta 1e-5) and each b, jax-privacy's
_AmplifiedBandMFHelper optimises the b-banded strategy for n steps, calibrates the
amplified-BandMF noise multiplier (RDP, sampling rate B / (N // b)) and reports its
loss: the RMS error of the average prefix sum of the gradients (per unit clipping norm).
b = 1 is DP-SGD. Usage (results/bandmf.md):

  python results/bandmf_predict.py STEPS N BATCH 1,2,4 [EPSILONS, e.g. 1,3]
"""
import sys
import jax.numpy as jnp
from jax_privacy.matrix_factorization import toeplitz
n, N, B = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
bands = [int(x) for x in sys.argv[4].split(',')]
epsilons = [float(x) for x in (sys.argv[5] if len(sys.argv) > 5 else '1,2,4').split(',')]
for eps in epsilons:
  h = toeplitz._AmplifiedBandMFHelper(n, N, B, eps, 1e-5, reduction_fn=jnp.mean)
  out = []
  for r in h.compute_loss_for_bands(bands_list=bands, max_workers=1):
    out.append(f"b={r['bands']}: loss={float(r['loss']):.4f} (sigma={h.total_noise_multiplier(r['bands']):.3f})")
  print(f'eps={eps}: ' + '; '.join(out))

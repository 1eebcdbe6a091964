"""The generator of a secret's noise: Threefry-4x32-20, a 128-bit key, as a JAX PRNG.

Why 128 bits (docs/privacy.md, invariant 17): JAX's default generator, threefry2x32,
has a 64-bit key. Whoever holds two consecutive checkpoints can test a candidate key
against a hundred coordinates of the released update, and a search of 2^64 keys is
within reach of a well-funded attacker; the key found gives back every step's noise.
Here the key is 128 bits, and every output is a function of all of them.

The block function is Random123's Threefry-4x32 with 20 rounds (Salmon et al. 2011):
four uint32 key words, a four-word counter, four words out. The generator is the one
JAX ships as 'threefry4x32' (the same key schedule, rotations, counters, key
derivation and bits: tests/privacy/test_noise_key.py compares the two bit for bit, and
with Random123's known answer). It is defined again here for two reasons: JAX lowers
that block function unrolled on every platform, which on the CPU compiles about five
times slower than its threefry2x32 (rolled there; with a few leaves it did not finish
compiling in 10 minutes on a loaded 2-core CPU), so here most rounds run as a loop on
the CPU and unrolled elsewhere, as JAX does for threefry2x32; and the
bits are fixed by this file, so a resume under another JAX version continues the same
noise stream.

How keys and bits derive from a key k (each a block keyed by all 128 bits of k):
- ``fold_in(k, d)`` = block(k, (0, 0, 0, d));
- ``split(k, shape)[i]`` = block(k, (0, 0, hi(i), lo(i))) for the flat index i (so
  ``split(k)[i]`` equals ``fold_in(k, i)``: privacy/noise.py never does both to one key);
- ``random_bits(k, 32, shape)[i]`` = the XOR of the four words of
  block(k, (hi(i), lo(i), 0, 0)); 64 bits: (w0 ^ w2) << 32 | (w1 ^ w3); 8 and 16: the
  low bits of the 32-bit value.
"""
import math

import jax
import jax.extend.random
from jax import lax
import jax.numpy as jnp
import numpy as np

NAME = 'threefry4x32'
KEY_WORDS = 4

# Random123's R_32x4 rotation constants: round r uses row r % 8.
_ROTATIONS = np.array([[10, 26], [11, 21], [13, 27], [23, 5],
                       [6, 20], [17, 11], [25, 10], [18, 20]], np.uint32)
_PARITY = np.uint32(0x1BD11BDA)  # Skein's key-schedule parity constant
_GROUPS = 5                      # 20 rounds: 5 groups of 4, a key injection after each


def _rotl(x, d):
  return lax.shift_left(x, d) | lax.shift_right_logical(x, jnp.uint32(32) - d)


def _round(x, r, rot0, rot1):
  """Round ``r`` (its parity picks the word pairs) with rotations (rot0, rot1)."""
  x0, x1, x2, x3 = x
  if r % 2 == 0:
    x0 = x0 + x1
    x1 = _rotl(x1, rot0) ^ x0
    x2 = x2 + x3
    x3 = _rotl(x3, rot1) ^ x2
  else:
    x0 = x0 + x3
    x3 = _rotl(x3, rot0) ^ x0
    x2 = x2 + x1
    x1 = _rotl(x1, rot1) ^ x2
  return [x0, x1, x2, x3]


def _schedule(key):
  k0, k1, k2, k3 = key
  return [k0, k1, k2, k3, k0 ^ k1 ^ k2 ^ k3 ^ _PARITY]


def block_unrolled(key, counter):
  """Threefry-4x32-20 of ``counter`` (4 uint32 arrays) under ``key`` (4 uint32
  scalars): 4 uint32 arrays. Every round written out (fast to run, slow to compile)."""
  ks = _schedule(key)
  x = [c + k for c, k in zip(counter, ks)]
  for group in range(_GROUPS):  # key injection g: ks[g + 1 + i], and g + 1 on word 3
    x = _group(x, 4 * (group % 2), ks[group:] + ks[:group], jnp.uint32(group + 1))
  return tuple(x)


def _group(x, rows, ks, counter_add):
  """Four rounds with rotation rows ``rows`` (0 or 4), then the key injection: the
  words plus ks[1..4] and ``counter_add`` on the last (ks rotated to the group)."""
  for i in range(4):
    x = _round(x, i, *(jnp.uint32(v) for v in _ROTATIONS[rows + i]))
  out = [x[i] + ks[1 + i] for i in range(4)]
  out[3] = out[3] + counter_add
  return out


def block_rolled(key, counter):
  """``block_unrolled`` with groups 1-4 as a loop of two iterations (fast to compile):
  group 0, then (odd group, even group) twice. Round 4g + i has the parity of i and
  rotation row (4g + i) % 8, so the rotations stay constants."""
  ks = _schedule(key)
  x = [c + k for c, k in zip(counter, ks)]
  x = _group(x, 0, ks, jnp.uint32(1))
  rotate = lambda ks, n: ks[n:] + ks[:n]

  def pair(j, carry):
    x, ks_j = list(carry[0]), list(carry[1])  # ks_j: ks rotated left by 2j + 1
    g = 2 * j.astype(jnp.uint32) + 1
    x = _group(x, 4, ks_j, g + 1)
    x = _group(x, 0, rotate(ks_j, 1), g + 2)
    return tuple(x), tuple(rotate(ks_j, 2))

  x, _ = lax.fori_loop(0, 2, pair, (tuple(x), tuple(rotate(ks, 1))))
  return tuple(x)


def block(key, counter):
  """Threefry-4x32-20; the bits are the same either way (tested): rolled where the
  default backend is the CPU (it compiles faster there), else unrolled (it runs faster
  on accelerators, as JAX's own lowerings of threefry2x32 choose)."""
  key = [jnp.asarray(k, jnp.uint32) for k in key]
  counter = jnp.broadcast_arrays(*[jnp.asarray(c, jnp.uint32) for c in counter])
  if jax.default_backend() == 'cpu':
    return block_rolled(key, counter)
  return block_unrolled(key, counter)


def _words(key):
  return [key[i] for i in range(KEY_WORDS)]


def _counters(shape):
  """(hi, lo) words of the flat index of every element of ``shape``."""
  n = math.prod(shape)
  if n >= 2 ** 32:
    raise NotImplementedError(f'{NAME}: more than 2^32 draws from one key')
  lo = lax.iota(jnp.uint32, n).reshape(shape)
  return jnp.zeros(shape, jnp.uint32), lo


def _seed(seed):
  """A key from an integer seed (as JAX's threefry4x32; the noise never uses it)."""
  seed = jnp.asarray(seed)
  hi = lax.convert_element_type(
      lax.shift_right_logical(seed, jnp.asarray(32, seed.dtype)), jnp.uint32)
  lo = lax.convert_element_type(seed & jnp.asarray(0xFFFFFFFF, seed.dtype)
                                if seed.dtype.itemsize > 4 else seed, jnp.uint32)
  zero = jnp.uint32(0)
  return jnp.stack(block([hi, lo, zero, zero], [zero] * 4))


def _split(key, shape):
  hi, lo = _counters(tuple(shape))
  zero = jnp.zeros(tuple(shape), jnp.uint32)
  return jnp.stack(block(_words(key), [zero, zero, hi, lo]), axis=-1)


def _fold_in(key, data):
  data = lax.convert_element_type(jnp.asarray(data), jnp.uint32)
  zero = jnp.zeros(data.shape, jnp.uint32)
  return jnp.stack(block(_words(key), [zero, zero, zero, data]), axis=-1)


def _random_bits(key, bit_width, shape):
  if bit_width not in (8, 16, 32, 64):
    raise TypeError(f'{NAME}: bit_width must be 8, 16, 32 or 64, got {bit_width}')
  hi, lo = _counters(tuple(shape))
  zero = jnp.zeros(tuple(shape), jnp.uint32)
  w0, w1, w2, w3 = block(_words(key), [hi, lo, zero, zero])
  if bit_width == 64:
    top = lax.convert_element_type(w0 ^ w2, jnp.uint64)
    return lax.shift_left(top, jnp.uint64(32)) | lax.convert_element_type(
        w1 ^ w3, jnp.uint64)
  bits = w0 ^ w1 ^ w2 ^ w3
  if bit_width == 32:
    return bits
  return lax.convert_element_type(bits, jnp.dtype(f'uint{bit_width}'))


THREEFRY4X32 = jax.extend.random.define_prng_impl(
    key_shape=(KEY_WORDS,), seed=_seed, split=_split, random_bits=_random_bits,
    fold_in=_fold_in, name=NAME, tag='n4x32')

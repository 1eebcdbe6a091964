"""Every noise draw depends on 128 secret bits (privacy/noise.py; docs/privacy.md,
invariant 17).

- A secret's noise key is four uint32 words of Threefry-4x32-20
  (privacy/noise_generator.py): Random123's known-answer vector, the same bits as JAX's
  own 'threefry4x32' for every operation, the rolled (CPU) and the unrolled block
  function alike.
- Flipping any one of the 128 bits of the base key changes every coordinate of a
  step's noise, and the step keys of different steps differ.
- The draws are N(0, stddev^2) per coordinate (moments, a Kolmogorov-Smirnov test),
  uncorrelated across steps and across leaves.
- The testing switch's two-word key draws exactly what earlier versions drew (the
  operations on a raw threefry2x32 key), so seeded runs stay bit for bit the same.
The same noise on every device, and after a resume, is tested where the step runs:
tests/training/test_dp_step.py (four devices), test_resume.py and
test_bandmf_training.py (a killed run resumed), test_multiprocess.py (two processes).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from image_classification.privacy import mechanism_secret
from image_classification.privacy import noise
from image_classification.privacy import noise_generator

KEY = np.array([0x9E3779B9, 0x7F4A7C15, 0x85EBCA6B, 0xC2B2AE35], np.uint32)


def test_a_secret_gives_a_128_bit_threefry4x32_key():
  r = mechanism_secret.from_secret(bytes(range(32)))
  assert len(r.noise_key_words) == mechanism_secret.NOISE_KEY_WORDS == 4
  assert len(set(r.noise_key_words)) == 4  # four words, 128 bits, none repeated
  assert r.noise_key().dtype == np.uint32
  assert noise.generator(len(r.noise_key_words)) == 'threefry4x32'
  key = noise.base_noise_key(r.noise_key())
  assert str(jax.random.key_impl(key)) == 'threefry4x32'
  np.testing.assert_array_equal(jax.random.key_data(key), r.noise_key())
  # Each word comes from the secret: another secret, four other words.
  other = mechanism_secret.from_secret(bytes(range(1, 33)))
  assert all(a != b for a, b in zip(r.noise_key_words, other.noise_key_words))
  # The seeded switch keeps its 64-bit threefry2x32 key.
  seeded = mechanism_secret.from_seed(3)
  assert noise.generator(len(seeded.noise_key_words)) == 'threefry2x32'
  with pytest.raises(ValueError, match='uint32 words'):
    noise.generator(3)


def test_the_generator_is_random123s_threefry_4x32_20_and_jaxs():
  """Random123's known answer for Threefry-4x32, 20 rounds, key 0 and counter 0 (its
  kat_vectors file; fold_in(key, 0) is that block), for both forms of the block
  function; and every operation gives the bits of JAX's own 'threefry4x32'."""
  zero = [jnp.uint32(0)] * 4
  for block in (noise_generator.block_rolled, noise_generator.block_unrolled):
    words = jax.jit(lambda b=block: b(zero, zero))()
    assert [f'{int(w):08x}' for w in words] == ['9c6ca96a', 'e17eae66', 'fc10ecd4',
                                                '5256a7d8']
  counter = [jnp.arange(50, dtype=jnp.uint32) * 7919 + i for i in range(4)]
  key = [jnp.uint32(w) for w in KEY]
  rolled = jax.jit(lambda: noise_generator.block_rolled(key, counter))()
  unrolled = jax.jit(lambda: noise_generator.block_unrolled(key, counter))()
  for a, b in zip(rolled, unrolled):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def operations(impl):
    k = jax.random.wrap_key_data(KEY, impl=impl)
    f = jax.random.fold_in(k, 12345)
    s = jax.random.split(f, 3)
    return [jax.random.key_data(f), jax.random.key_data(s), jax.random.bits(s[1], (7, 5)),
            jax.random.normal(s[2], (300,)), jax.random.key_data(jax.random.key(42, impl=impl))]

  ours = jax.jit(lambda: operations(noise_generator.THREEFRY4X32))()
  jaxs = jax.jit(lambda: operations('threefry4x32'))()
  for a, b in zip(ours, jaxs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@functools.partial(jax.jit, static_argnames='shapes')
def _step_noise(raw_key, step, shapes=((61,), (3, 5))):
  """Step ``step``'s noise (stddev 1) of a tree of ``shapes``, flattened."""
  zeros = {f'leaf{i}': jnp.zeros(s, jnp.float32) for i, s in enumerate(shapes)}
  noisy = noise.add_noise(zeros, noise.step_noise_key(raw_key, step), 1.0)
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(noisy)])


def test_every_one_of_the_128_key_bits_changes_every_coordinate():
  flips = np.repeat(KEY[None], 128, axis=0)
  for bit in range(128):
    flips[bit, bit // 32] ^= np.uint32(1 << (bit % 32))
  assert all(int(np.sum(KEY != f)) == 1 for f in flips)  # one bit of one word each
  draw = jax.jit(jax.vmap(lambda k: _step_noise(k, 7)))  # one compilation for all
  base = np.asarray(_step_noise(KEY, 7))
  flipped = np.asarray(draw(flips))
  assert flipped.shape == (128, base.size)
  # Every coordinate of the step's noise changes with every single bit.
  assert np.all(flipped != base[None])
  # ... and the 128 flipped keys give 128 different draws.
  assert len({tuple(row) for row in flipped.round(6)}) == 128
  # Step keys never repeat across steps (the key is only ever used for its step).
  keys = jax.jit(jax.vmap(lambda s: jax.random.key_data(noise.step_noise_key(KEY, s))))(
      jnp.arange(2000))
  assert len({tuple(k) for k in np.asarray(keys).tolist()}) == 2000


def test_the_draws_are_standard_normal_and_independent():
  """Fixed key, so deterministic; tolerances at 5 standard errors."""
  steps = [np.asarray(_step_noise(KEY, s, shapes=((100_000,), (300, 100)))) for s in (0, 1)]
  x = np.concatenate(steps)
  n = x.size
  assert abs(np.mean(x)) < 5 / np.sqrt(n)
  assert abs(np.var(x) - 1) < 5 * np.sqrt(2 / n)
  assert abs(stats.skew(x)) < 5 * np.sqrt(6 / n)
  assert abs(stats.kurtosis(x)) < 5 * np.sqrt(24 / n)
  assert stats.kstest(x, 'norm').pvalue > 1e-3
  half = steps[0].size
  # Two steps, and two leaves of one step, are uncorrelated.
  assert abs(np.corrcoef(steps[0], steps[1])[0, 1]) < 5 / np.sqrt(half)
  assert abs(np.corrcoef(steps[0][:30_000], steps[0][100_000:130_000])[0, 1]) < \
      5 / np.sqrt(30_000)
  # stddev scales the draw: N(0, stddev^2); the leaves are cut from one draw.
  tree = {'a': jnp.zeros((5, 4)), 'b': jnp.zeros((30,))}
  draw = jax.jit(lambda s: noise.add_noise(tree, noise.step_noise_key(KEY, 3), s))
  scaled, unit = draw(2.5), draw(1.0)
  for leaf in ('a', 'b'):
    np.testing.assert_allclose(scaled[leaf], 2.5 * unit[leaf], rtol=1e-6)
  flat = jax.jit(lambda: jax.random.normal(noise.step_noise_key(KEY, 3), (50,)))()
  np.testing.assert_array_equal(np.concatenate([np.ravel(unit['a']), unit['b']]), flat)


def test_the_seeded_switch_draws_exactly_what_earlier_versions_drew():
  """The old code on a raw threefry2x32 key: fold_in(fold_in(key, stream), step),
  split per leaf, jax.random.normal."""
  raw = np.asarray(mechanism_secret.from_seed(11).noise_key())
  np.testing.assert_array_equal(raw, np.asarray(jax.random.PRNGKey(11)))
  tree = {'a': jnp.zeros((4, 3)), 'b': jnp.zeros((17,))}

  @jax.jit
  def old(step):  # earlier versions' noise.py on the raw key
    old_key = jax.random.fold_in(jax.random.fold_in(jnp.asarray(raw), 0x401_5E), step)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(old_key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [
        x + 0.7 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])

  new = jax.jit(lambda step: noise.add_noise(tree, noise.step_noise_key(raw, step), 0.7))
  for step in (0, 5):
    for a, b in zip(jax.tree_util.tree_leaves(old(step)),
                    jax.tree_util.tree_leaves(new(step))):
      np.testing.assert_array_equal(np.asarray(b), np.asarray(a))

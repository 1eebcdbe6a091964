"""The secret randomness of the DP mechanism: the noise key, the batch-selection seed and
the augmentation key.

Privacy semantics. The Gaussian mechanism protects a clipped sum only while its noise is
unknown to the adversary, and Poisson (or fixed-size) subsampling amplifies privacy only
while nobody knows which examples were drawn. Both therefore come from a secret:

- 256 bits from the operating system's entropy (``fresh_secret``), drawn when a run
  starts in a fresh workdir, so every run, every sweep point and every re-run of a config
  into a new workdir has its own noise stream and its own batches;
- kept private by the trainer (workdir/secret_file.py) so that a resume continues the
  same streams exactly, and never written to a published file (config.json,
  metrics.jsonl, privacy.json/.md, summary.json, plan.json, checkpoint metadata, wandb,
  sweep tables, reports), nor compiled into an executable: the noise key reaches the
  jitted step as an argument, so XLA dumps and the compilation cache do not hold it.

``config.seed`` drives only the initialisation. The augmentation and dropout keys come
from the secret too (``augment_key``): they are drawn per batch slot, and adding one
example to the data shifts the slots of the examples sorted after it. With public keys
the adversary would know how each of those examples is augmented in either world, and
the clipped sum would differ by far more than C (every shifted example's crop, flip and
dropout mask change); with secret keys, i.i.d. across slots, the other examples'
augmentations have the same distribution in both worlds and the sensitivity is C
(training/dp_step.py; docs/privacy.md, invariant 18). Until 2026-12-07 these keys came
from ``config.seed``, which config.json publishes.

The noise key is a 128-bit key of the Threefry-4x32-20 generator (four uint32 words;
privacy/noise_generator.py): the 256-bit secret is hashed (SHA-256, domain-separated)
down to it, and every step's Gaussian draws are a function of all 128 bits
(privacy/noise.py says how; docs/privacy.md, invariant 17). Rebuilding a step's noise
from released checkpoints therefore means searching 2^128 keys. (Until 2026-12-06 the
key was JAX's default threefry2x32 key, 64 bits: a search of 2^64 keys, each tested
against a hundred released coordinates, is within reach of a well-funded attacker.) The batch-selection seed keeps all 256 bits (numpy's SeedSequence takes them
whole).

For tests and debugging only, ``privacy.insecure_seeded_noise=True`` derives all three from
``config.seed`` as earlier versions did, with the same 64-bit threefry2x32 key, so that
such runs stay bit for bit what they were: anyone who holds the config can then
regenerate the noise and the batches, and every report of such a run says so in its
first lines.
"""
import dataclasses
import hashlib
import secrets

import jax
import numpy as np
from image_classification import errors

INSECURE_WARNING = (
    'INSECURE: privacy.insecure_seeded_noise=True derived the noise and the batches from '
    'config.seed. Anyone who has this config can regenerate them, so the (epsilon, delta) '
    'guarantee does NOT hold once the config is published. For tests and debugging only.')

SECRET_BYTES = 32  # 256 bits
NOISE_KEY_WORDS = 4  # the noise key: 4 uint32 words, 128 bits (threefry4x32)


class SecretError(errors.UserError):
  """The run's secret is missing, unreadable or malformed; the message says which."""


@dataclasses.dataclass(frozen=True, repr=False)
class MechanismRandomness:
  """The two secrets of one run. ``repr`` hides them so a log line cannot leak them."""
  # The raw noise key: NOISE_KEY_WORDS uint32 words (threefry4x32, 128 bits) from a
  # secret; the two words of a threefry2x32 key (64 bits) from the insecure seed.
  noise_key_words: tuple[int, ...]
  sampling_seed: int                 # the batch selection's numpy seed
  insecure: bool
  # The augmentation and dropout key: NOISE_KEY_WORDS uint32 words (threefry4x32) from
  # a secret; from the insecure seed, the two words of PRNGKey(seed), as before.
  augment_key_words: tuple[int, ...] = ()

  def noise_key(self) -> np.ndarray:
    """The base noise key as a raw uint32 array (pass it to the step as an argument;
    privacy/noise.py picks the generator from its length)."""
    return np.asarray(self.noise_key_words, dtype=np.uint32)

  def augment_key(self) -> np.ndarray:
    """The augmentation and dropout key as raw uint32 words (an argument of the step,
    like the noise key; training/dp_step.py ``example_keys``)."""
    return np.asarray(self.augment_key_words, dtype=np.uint32)

  def __repr__(self) -> str:
    return f'MechanismRandomness(insecure={self.insecure}, secret=<hidden>)'


def describe(insecure: bool) -> str:
  """One sentence for the privacy report (it reveals nothing about the values)."""
  if insecure:
    return INSECURE_WARNING
  # The file is workdir/secret_file.py's SECRET_FILE (a test keeps the two equal).
  return ('noise, batch selection and augmentation keys drawn from a 256-bit secret '
          "taken from the operating system's entropy at the start of the run, kept "
          'private in the workdir (mechanism_secret.json, deleted when the run '
          'completes) and never published; every noise draw depends on a 128-bit key '
          'derived from it')


def fresh_secret() -> bytes:
  """A new secret: SECRET_BYTES from the operating system's entropy."""
  return secrets.token_bytes(SECRET_BYTES)


def check_secret(secret: bytes) -> bytes:
  """``secret`` if it has SECRET_BYTES bytes; raises SecretError otherwise."""
  if len(secret) != SECRET_BYTES:
    raise SecretError(f'a mechanism secret has {SECRET_BYTES} bytes, got {len(secret)}')
  return secret


def _derive(secret: bytes, label: bytes) -> bytes:
  return hashlib.sha256(b'dp-image-classification/' + label + b'/' + secret).digest()


def from_secret(secret: bytes) -> MechanismRandomness:
  """The noise key (128 bits), sampling seed (256 bits) and augmentation key (128 bits)
  of a secret: independent, domain-separated SHA-256 derivations."""
  check_secret(secret)

  def words(label):
    digest = _derive(secret, label)
    return tuple(int.from_bytes(digest[4 * i:4 * i + 4], 'little')
                 for i in range(NOISE_KEY_WORDS))

  sampling_seed = int.from_bytes(_derive(secret, b'sampling'), 'little')
  return MechanismRandomness(noise_key_words=words(b'noise'), sampling_seed=sampling_seed,
                             insecure=False, augment_key_words=words(b'augment'))


def from_seed(seed: int) -> MechanismRandomness:
  """INSECURE, for tests: what ``jax.random.PRNGKey(seed)`` and ``seed`` gave before
  (a 64-bit threefry2x32 noise key, so that seeded runs reproduce earlier ones)."""
  words = tuple(int(w) for w in np.asarray(jax.random.PRNGKey(int(seed))))
  return MechanismRandomness(noise_key_words=words, sampling_seed=int(seed),
                             insecure=True, augment_key_words=words)

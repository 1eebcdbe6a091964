"""The secret randomness of the DP mechanism: the noise key and the batch-selection seed.

Privacy semantics. The Gaussian mechanism protects a clipped sum only while its noise is
unknown to the adversary, and Poisson (or fixed-size) subsampling amplifies privacy only
while nobody knows which examples were drawn. Both therefore come from a secret:

- 256 bits from the operating system's entropy (``secrets.token_bytes``), drawn when a run
  starts in a fresh workdir, so every run, every sweep point and every re-run of a config
  into a new workdir has its own noise stream and its own batches;
- kept in ``WORKDIR/mechanism_secret.json`` with owner-only permissions (0600) so that a
  resume continues the same streams exactly, and deleted when the run completes;
- never written to a published file (config.json, metrics.jsonl, privacy.json/.md,
  summary.json, plan.json, checkpoint metadata, wandb, sweep tables, reports), nor
  compiled into an executable: the noise key reaches the jitted step as an argument, so
  XLA dumps and the compilation cache do not hold it.

``config.seed`` drives only the initialisation and the augmentation/dropout keys, which
need not be secret (an example's contribution is clipped whatever its augmentation).

The noise key is JAX's default threefry key, which holds 64 bits: the 256-bit secret is
hashed (SHA-256, domain-separated) down to it. The batch-selection seed keeps all 256
bits (numpy's SeedSequence takes them whole).

For tests and debugging only, ``privacy.insecure_seeded_noise=True`` derives both from
``config.seed`` as earlier versions did: anyone who holds the config can then regenerate
the noise and the batches, and every report of such a run says so in its first lines.
"""
import dataclasses
import hashlib
import json
import os
import secrets

import jax
import numpy as np

from image_classification import run_files


INSECURE_WARNING = (
    'INSECURE: privacy.insecure_seeded_noise=True derived the noise and the batches from '
    'config.seed. Anyone who has this config can regenerate them, so the (epsilon, delta) '
    'guarantee does NOT hold once the config is published. For tests and debugging only.')

_SECRET_BYTES = 32


class SecretError(ValueError):
  """The workdir's secret is missing or unreadable; the message names the file."""


@dataclasses.dataclass(frozen=True, repr=False)
class MechanismRandomness:
  """The two secrets of one run. ``repr`` hides them so a log line cannot leak them."""
  noise_key_words: tuple[int, int]   # a raw threefry key (two uint32 words)
  sampling_seed: int                 # the batch selection's numpy seed
  insecure: bool

  def noise_key(self) -> np.ndarray:
    """The base noise key as a raw uint32[2] array (pass it to the step as an argument)."""
    return np.asarray(self.noise_key_words, dtype=np.uint32)

  def __repr__(self) -> str:
    return f'MechanismRandomness(insecure={self.insecure}, secret=<hidden>)'



def describe(insecure: bool) -> str:
  """One sentence for the privacy report (it reveals nothing about the values)."""
  if insecure:
    return INSECURE_WARNING
  return ('noise and batch selection drawn from a 256-bit secret taken from the '
          "operating system's entropy at the start of the run, kept private in the "
          f'workdir ({run_files.MECHANISM_SECRET}, deleted when the run completes) and never '
          'published')


def _derive(secret: bytes, label: bytes) -> bytes:
  return hashlib.sha256(b'dp-image-classification/' + label + b'/' + secret).digest()


def from_secret(secret: bytes) -> MechanismRandomness:
  """The noise key and sampling seed of a secret (independent, domain-separated)."""
  if len(secret) != _SECRET_BYTES:
    raise SecretError(f'a mechanism secret has {_SECRET_BYTES} bytes, got {len(secret)}')
  noise = _derive(secret, b'noise')
  words = (int.from_bytes(noise[:4], 'little'), int.from_bytes(noise[4:8], 'little'))
  sampling_seed = int.from_bytes(_derive(secret, b'sampling'), 'little')
  return MechanismRandomness(noise_key_words=words, sampling_seed=sampling_seed,
                             insecure=False)


def from_seed(seed: int) -> MechanismRandomness:
  """INSECURE, for tests: what ``jax.random.PRNGKey(seed)`` and ``seed`` gave before."""
  words = tuple(int(w) for w in np.asarray(jax.random.PRNGKey(int(seed))))
  return MechanismRandomness(noise_key_words=words, sampling_seed=int(seed),
                             insecure=True)


def path(workdir: str) -> str:
  return os.path.join(workdir, run_files.MECHANISM_SECRET)


def create(workdir: str) -> bytes:
  """Draws a fresh secret from the OS's entropy and writes it to the workdir."""
  secret = secrets.token_bytes(_SECRET_BYTES)
  write(workdir, secret)
  return secret


def write(workdir: str, secret: bytes) -> None:
  """Writes ``secret`` owner-only (0600); refuses to overwrite an existing one."""
  if len(secret) != _SECRET_BYTES:
    raise SecretError(f'a mechanism secret has {_SECRET_BYTES} bytes, got {len(secret)}')
  os.makedirs(workdir, exist_ok=True)
  content = json.dumps({
      'secret_hex': secret.hex(),
      'about': 'The secret noise and batch-selection randomness of this DP run. Keep it '
               'private: whoever has it can regenerate the noise and the batches and '
               'undo the privacy guarantee. Needed only to resume the run; deleted when '
               'the run completes.'}, indent=2) + '\n'
  fd = os.open(path(workdir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
  with os.fdopen(fd, 'w') as f:
    f.write(content)
    f.flush()
    os.fsync(f.fileno())


def read(workdir: str) -> bytes:
  try:
    with open(path(workdir)) as f:
      secret = bytes.fromhex(json.load(f)['secret_hex'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise SecretError(
        f'{path(workdir)} cannot be read ({e}): it holds the secret noise and batch '
        'randomness this run needs to resume exactly. Restore the file, or use a new '
        '--workdir to train again from scratch') from e
  if len(secret) != _SECRET_BYTES:
    raise SecretError(f'{path(workdir)} holds {len(secret)} bytes, not {_SECRET_BYTES}: '
                      'restore the file, or use a new --workdir')
  return secret


def for_run(workdir: str, seed: int, insecure: bool, resuming: bool
            ) -> MechanismRandomness:
  """The run's randomness: read from the workdir, or drawn fresh for a new run.

  ``resuming``: the workdir holds a checkpoint, so the secret must already be there (a
  new secret would silently change the mechanism's randomness halfway).
  """
  if insecure:
    return from_seed(seed)
  if os.path.exists(path(workdir)):
    return from_secret(read(workdir))
  if resuming:
    raise SecretError(
        f'{path(workdir)} is missing, but the workdir holds checkpoints: the secret '
        'noise and batch randomness of the run are needed to resume it exactly. Restore '
        'the file, or use a new --workdir to train again from scratch')
  return from_secret(create(workdir))


def discard(workdir: str) -> None:
  """Deletes the secret once nothing needs it (the run is complete)."""
  try:
    os.remove(path(workdir))
  except FileNotFoundError:
    pass

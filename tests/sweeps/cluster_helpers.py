"""Training functions that test_cluster.py hands to submitit jobs (a job imports them,
so they live in a module, not in the test file)."""
import json
import os
from unittest import mock

from image_classification import runs
from image_classification.workdir import secret_file

SEEN_SECRETS = 'DP_TEST_SEEN_SECRETS'  # folder, outside the sweep, for the copies
FAILING_SEED = 99


def train_keeping_the_secret(config, workdir):
  """The real training (runs.train), watched: when the run deletes its secret at
  the end (secret_file.discard), a copy first goes to $DP_TEST_SEEN_SECRETS/<point>.hex,
  outside the sweep's folder, so that the test can look for it (and for the batches it
  drew) in what the sweep left. config.seed == FAILING_SEED fails before training."""
  if config.seed == FAILING_SEED:
    raise RuntimeError(f'planted failure for seed {FAILING_SEED}')
  discard = secret_file.discard

  def keep_then_discard(point_dir):
    with open(secret_file.path(point_dir)) as f:
      secret_hex = json.load(f)['secret_hex']
    with open(os.path.join(os.environ[SEEN_SECRETS],
                           os.path.basename(point_dir) + '.hex'), 'w') as f:
      f.write(secret_hex)
    discard(point_dir)

  with mock.patch.object(secret_file, 'discard', keep_then_discard):
    return runs.train(config, workdir)

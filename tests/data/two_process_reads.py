"""One of two JAX processes (2 CPU devices each) reading a global batch of 8 rows from
an on-disk image folder through the input pipeline (1 worker); run by
tests/input/test_input_pipeline.py:

  python -m tests.data.two_process_reads PROCESS_ID PORT FOLDER OUT_JSON

Writes OUT_JSON: the indices of the batch, the indices this process asked its
pipeline for, and whether the assembled global batch equals a one-process read of the
whole batch. (Synthetic test images: nothing here is private.)
"""
import json
import sys

import jax
from jax.experimental import multihost_utils
import numpy as np

from image_classification.input import input_pipeline
from image_classification.data.readers import local_files
from image_classification.hosts import joining
from image_classification.training import distributed
from image_classification.training import mesh as mesh_lib

STEP = 5


def main(process_id: int, port: int, folder: str, out_path: str) -> None:
  joining.initialize(f'localhost:{port}', 2, process_id, timeout_s=120)
  mesh = mesh_lib.make_mesh(jax.devices())
  sharding = mesh_lib.batch_sharding(mesh)
  train = local_files.load_image_folder_on_disk(folder, 16).train
  pipeline = input_pipeline.ParallelSource(train, 1)
  asked = []

  def load(indices):
    asked.append([int(i) for i in indices])
    return pipeline.get(indices, step=STEP)

  indices = np.array([33, 2, 17, 2, 39, 8, 21, 0])
  try:
    images, labels, _ = distributed.global_batch(sharding, indices,
                                                 np.ones(8, bool), load)
    everything = (multihost_utils.process_allgather(images, tiled=True),
                  multihost_utils.process_allgather(labels, tiled=True))
  finally:
    pipeline.close()
  expected = train.get(indices, step=STEP)
  with open(out_path, 'w') as f:
    json.dump({'indices': indices.tolist(), 'asked': asked,
               'global_batch_equals_one_process_read': bool(
                   np.array_equal(everything[0], expected[0])
                   and np.array_equal(everything[1], expected[1]))}, f)


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])

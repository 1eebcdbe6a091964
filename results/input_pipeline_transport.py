"""What moving an image from a worker process to the trainer costs, against indexing an
in-memory array (results/input_pipeline.md, "In-memory datasets keep the loading
thread").

  python results/input_pipeline_transport.py [--rows=3000]

The workers' source returns one constant image (nothing is decoded), so only the
transport is timed: the request, grain's per-element work, the image's way back (the
shared ring, or pickled through the pipes as off Linux) and the copy into the batch.
Prints, per image shape and worker count, the CPU milliseconds per image of this
process and of the workers (from /proc) and the wall milliseconds per image; the
second of two repetitions (the first warms up).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from image_classification.data import base  # pylint: disable=g-import-not-at-top,wrong-import-position
from image_classification.tools import input_benchmark  # pylint: disable=g-import-not-at-top,wrong-import-position
from image_classification.input import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position


class ConstantSource:
  """An on-disk-source lookalike whose reads cost nothing but a copy."""

  def __init__(self, num_examples: int, shape):
    self.num_examples = num_examples
    self.image_shape = tuple(shape)
    self._image = np.full(shape, 7, np.uint8)

  def read_one(self, index, step=0):
    del index, step
    return self._image.copy(), 1

  def get(self, indices, step=0):
    del step
    return (np.stack([self._image] * len(indices)),
            np.ones(len(indices), np.int32))


def transport(shape, workers: int, rows: int, ring: bool) -> tuple[float, ...]:
  available = input_pipeline._ImageRing.available  # pylint: disable=protected-access
  if not ring:
    input_pipeline._ImageRing.available = staticmethod(lambda: False)  # pylint: disable=protected-access
  pipeline = input_pipeline.ParallelSource(ConstantSource(10 ** 6, shape), workers)
  try:
    pipeline.get(np.arange(workers))
    for _ in range(2):
      cpu_before, began = input_benchmark._cpu_seconds(), time.perf_counter()  # pylint: disable=protected-access
      pipeline.get(np.arange(rows), step=1)
      wall = time.perf_counter() - began
      cpu_after = input_benchmark._cpu_seconds()  # pylint: disable=protected-access
  finally:
    pipeline.close()
    input_pipeline._ImageRing.available = available  # pylint: disable=protected-access
  parent, children = ((a - b) / rows * 1e3 for a, b in zip(cpu_after, cpu_before))
  return parent, children, wall / rows * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', type=int, default=3000)
  args = parser.parse_args()
  print(f'load average {os.getloadavg()}')
  for shape in ((32, 32, 3), (224, 224, 3)):
    arrays = base.ArraySource(np.zeros((20000,) + shape, np.uint8),
                              np.zeros(20000, np.int32))
    indices = np.random.default_rng(0).choice(20000, args.rows, replace=False)
    arrays.get(indices)
    began = time.process_time()
    arrays.get(indices)
    print(f'{shape}: in-memory ArraySource.get '
          f'{(time.process_time() - began) / args.rows * 1e3:.4f} ms CPU per image')
    for ring in (True, False):
      for workers in (1, 2):
        parent, children, wall = transport(shape, workers, args.rows, ring)
        print(f'{shape}: {workers} worker(s), {"ring" if ring else "pipes"}: CPU '
              f'{parent + children:.3f} ms per image ({parent:.3f} this process, '
              f'{children:.3f} workers), wall {wall:.3f} ms', flush=True)
  print(f'load average {os.getloadavg()}')


if __name__ == '__main__':
  main()

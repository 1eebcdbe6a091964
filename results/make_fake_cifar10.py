"""Writes CIFAR-10-format files of random images, for timing runs without the dataset.

  python results/make_fake_cifar10.py OUT_DIR [--train_per_batch=10000] [--test=10000]

creates OUT_DIR/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: the
python-pickle layout of the real archive (a dict with b'data', uint8 [n, 3072] rows of
1024 red, 1024 green, then 1024 blue values, and b'labels', a list of ints in 0..9),
which image_classification/data/local_files.py load_cifar reads with
--config.data.path=OUT_DIR. The images are uniform noise and the labels random: the
files are only good for throughput, never for accuracy.
"""
import argparse
import os
import pickle

import numpy as np

FOLDER = 'cifar-10-batches-py'
CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
           'ship', 'truck')


def write_batch(path: str, n: int, rng: np.random.Generator, name: str) -> None:
  batch = {
      b'batch_label': name.encode(),
      b'labels': [int(x) for x in rng.integers(0, 10, n)],
      b'data': rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
      b'filenames': [f'{name}_{i}.png'.encode() for i in range(n)],
  }
  with open(path, 'wb') as f:
    pickle.dump(batch, f, protocol=2)


def make(out_dir: str, train_per_batch: int = 10000, test: int = 10000,
         seed: int = 0) -> str:
  """Writes the six batches (and batches.meta); returns the cifar-10-batches-py path."""
  folder = os.path.join(out_dir, FOLDER)
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(1, 6):
    write_batch(os.path.join(folder, f'data_batch_{i}'), train_per_batch, rng,
                f'training batch {i} of 5')
  write_batch(os.path.join(folder, 'test_batch'), test, rng, 'testing batch 1 of 1')
  with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
    pickle.dump({b'label_names': [c.encode() for c in CLASSES],
                 b'num_cases_per_batch': train_per_batch, b'num_vis': 3072}, f,
                protocol=2)
  return folder


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('out_dir')
  parser.add_argument('--train_per_batch', type=int, default=10000,
                      help='images in each of data_batch_1..5 (the real files: 10000)')
  parser.add_argument('--test', type=int, default=10000, help='images in test_batch')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  print(make(args.out_dir, args.train_per_batch, args.test, args.seed))


if __name__ == '__main__':
  main()

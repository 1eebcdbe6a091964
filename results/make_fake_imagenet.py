"""Writes an ImageNet-like image folder of synthetic JPEGs, for input benchmarks and tests.

  python results/make_fake_imagenet.py OUT_DIR [--train=1000] [--test=50] [--classes=10]

creates OUT_DIR/train/<class>/*.JPEG and OUT_DIR/test/<class>/*.JPEG (the classes
n00000000, n00000001, ...; the images spread evenly over them), which
image_classification/data/local_files.py reads with --config.data.name=image_folder
--config.data.path=OUT_DIR (on disk with --config.data.random_resized_crop=True).

The images have ImageNet's typical sizes (mostly 500 x 375 and 375 x 500, and the
other common shapes around them; the mean ImageNet training image is about 400 x 350)
and JPEG quality 90: smooth random colour fields with a few shapes and a fine
texture, so that they take about as long to decode as photographs of that size (a
JPEG of pure noise would be several times larger and slower). Nothing is downloaded;
the same arguments write the same files, byte for byte. The labels mean nothing: the
folder is good for throughput, never for accuracy.
"""
import argparse
import os

import numpy as np
from PIL import Image
from PIL import ImageDraw

# (width, height) of common ImageNet shapes, with how often each is drawn.
SIZES = ((500, 375), (375, 500), (500, 333), (333, 500), (500, 500), (400, 300),
         (640, 480), (500, 400), (450, 338))
WEIGHTS = (0.40, 0.15, 0.12, 0.05, 0.08, 0.06, 0.05, 0.05, 0.04)
QUALITY = 90


def class_name(label: int) -> str:
  return f'n{label:08d}'


def fake_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
  """One RGB picture of ``size`` (width, height), drawn from ``rng``."""
  width, height = size
  coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
  picture = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
  draw = ImageDraw.Draw(picture)
  for _ in range(int(rng.integers(2, 6))):
    x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
    y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
      draw.ellipse((x0, y0, x1, y1), fill=fill)
    else:
      draw.rectangle((x0, y0, x1, y1), fill=fill)
  texture = rng.normal(0, 12, (height, width, 1))
  array = np.asarray(picture, np.float32) + texture
  return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def make(out_dir: str, train: int = 1000, test: int = 50, classes: int = 10,
         seed: int = 0, sizes=SIZES, weights=WEIGHTS) -> str:
  """Writes the folder; returns ``out_dir``. Example i of a split has label i % classes
  and is drawn from its own generator (seed, split, i): deterministic."""
  if classes < 2:
    raise ValueError(f'--classes={classes}: an image folder needs at least 2')
  for split_number, (split, count) in enumerate((('train', train), ('test', test))):
    for label in range(classes):
      os.makedirs(os.path.join(out_dir, split, class_name(label)), exist_ok=True)
    for i in range(count):
      rng = np.random.default_rng([seed, split_number, i])
      size = sizes[int(rng.choice(len(sizes), p=weights))]
      label = i % classes
      path = os.path.join(out_dir, split, class_name(label), f'{split}_{i:07d}.JPEG')
      fake_image(rng, size).save(path, format='JPEG', quality=QUALITY)
  return out_dir


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('out_dir')
  parser.add_argument('--train', type=int, default=1000, help='training images')
  parser.add_argument('--test', type=int, default=50, help='test images')
  parser.add_argument('--classes', type=int, default=10, help='class folders')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  if args.train < args.classes or args.test < 0:
    parser.error(f'--train={args.train} must be at least --classes={args.classes} '
                 f'(every class needs a training image), --test={args.test} >= 0')
  try:
    make(args.out_dir, args.train, args.test, args.classes, args.seed)
  except ValueError as e:
    parser.error(str(e))
  print(f'wrote {args.train} training and {args.test} test JPEGs in {args.classes} '
        f'classes to {args.out_dir}')


if __name__ == '__main__':
  main()

"""Small image folders of JPEGs written by the tests (no download, no shared data)."""
import os

import numpy as np
from PIL import Image


def write_jpeg_folder(root, train_per_class=10, test_per_class=2, classes=4, seed=0,
                      sizes=((40, 30), (30, 40), (48, 36), (36, 36))) -> str:
  """root/train/c<k>/*.jpg and root/test/c<k>/*.jpg of varied small sizes; returns root."""
  rng = np.random.default_rng(seed)
  for split, per_class in (('train', train_per_class), ('test', test_per_class)):
    for label in range(classes):
      folder = os.path.join(root, split, f'c{label}')
      os.makedirs(folder, exist_ok=True)
      for i in range(per_class):
        width, height = sizes[int(rng.integers(len(sizes)))]
        # A coarse colour field (JPEG-friendly) plus a class-dependent tint.
        coarse = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((width, height),
                                                 Image.Resampling.BILINEAR)
        array = np.asarray(picture, np.int32)
        array[..., label % 3] = np.minimum(array[..., label % 3] + 60, 255)
        Image.fromarray(array.astype(np.uint8)).save(
            os.path.join(folder, f'{split}_{i:03d}.jpg'), quality=90)
  return str(root)

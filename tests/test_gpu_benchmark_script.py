"""results/gpu_benchmark.sh and its fake CIFAR-10 files (the script itself runs for
minutes; `GPU_BENCH_TINY=1 bash results/gpu_benchmark.sh OUT.json` tries it)."""
import importlib.util
import os
import subprocess

import numpy as np

from image_classification.data.readers import local_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'make_fake_cifar10', os.path.join(ROOT, 'results', 'make_fake_cifar10.py'))
make_fake_cifar10 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fake_cifar10)


def test_fake_cifar10_reads_as_cifar10(tmp_path):
  folder = make_fake_cifar10.make(str(tmp_path), train_per_batch=3, test=4)
  assert folder == os.path.join(str(tmp_path), 'cifar-10-batches-py')
  data = local_files.load_cifar(str(tmp_path), 'cifar10')
  assert data.num_classes == 10
  images, labels = data.train.get(np.arange(15))
  assert images.shape == (15, 32, 32, 3) and images.dtype == np.uint8
  assert labels.min() >= 0 and labels.max() < 10
  assert data.test.num_examples == 4


def test_script_parses():
  subprocess.run(['bash', '-n', os.path.join(ROOT, 'results', 'gpu_benchmark.sh')],
                 check=True)

"""results/make_fake_imagenet.py: an image folder of ImageNet-sized JPEGs, the same bytes
for the same arguments, read by the platform's image-folder loader (on disk)."""
import filecmp
import os
import subprocess
import sys

from PIL import Image

from image_classification.data.readers import local_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'results', 'make_fake_imagenet.py')


def _run(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        timeout=120, check=False)


def test_writes_a_deterministic_imagenet_like_folder(tmp_path):
  first, second = str(tmp_path / 'a'), str(tmp_path / 'b')
  for out in (first, second):
    result = _run(out, '--train=12', '--test=5', '--classes=3')
    assert result.returncode == 0, result.stderr
  assert 'wrote 12 training and 5 test JPEGs in 3 classes' in result.stdout
  files = sorted(os.path.relpath(os.path.join(d, n), first)
                 for d, _, names in os.walk(first) for n in names)
  assert len(files) == 17
  assert sorted(os.listdir(os.path.join(first, 'train'))) == [
      'n00000000', 'n00000001', 'n00000002']
  _, mismatch, errors = filecmp.cmpfiles(first, second, files, shallow=False)
  assert not mismatch and not errors  # byte for byte
  sizes = set()
  for name in files:
    with Image.open(os.path.join(first, name)) as picture:
      assert picture.format == 'JPEG' and picture.mode == 'RGB'
      sizes.add(picture.size)
      assert 300 <= min(picture.size) and max(picture.size) <= 640
  assert len(sizes) > 1 and (500, 375) in sizes  # varied, mostly ImageNet's 500 x 375
  data = local_files.load_image_folder_on_disk(first, 32)
  assert (data.train.num_examples, data.test.num_examples, data.num_classes) == (12, 5, 3)
  assert data.train.get([0, 11], step=1)[0].shape == (2, 32, 32, 3)


def test_bad_arguments():
  result = _run('/nonexistent-never-written', '--train=2', '--classes=3')
  assert result.returncode == 2
  assert '--train=2 must be at least --classes=3' in result.stderr
  assert not os.path.exists('/nonexistent-never-written')

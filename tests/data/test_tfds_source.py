"""tfds datasets on tfds's own mock data (tfds.testing.mock_data): never a download.

These run without TensorFlow: the mock serves records through tfds's random-access
data source, as a prepared array_record dataset would.
"""
import numpy as np
import pytest

from configs import base as base_config
from image_classification.data import base
from image_classification.data import datasets
from image_classification.data import sources
from image_classification.data.readers import tfds_source

tfds = pytest.importorskip('tensorflow_datasets')

NUM_EXAMPLES = 6


def data_config(**overrides):
  config = base_config.get_config().data
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


@pytest.mark.parametrize('name, shape, num_classes', [
    ('mnist', (28, 28, 1), 10),
    ('fashion_mnist', (28, 28, 1), 10),
    ('cifar10', (32, 32, 3), 10),
    ('cifar100', (32, 32, 3), 100),
    ('svhn_cropped', (32, 32, 3), 10),
])
def test_small_datasets_load_into_memory(name, shape, num_classes):
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    splits = sources.load_dataset(data_config(name=name))
    # The same records through tfds directly, for comparison.
    records = tfds.data_source(name, split='train')
    expected = [records[i] for i in range(NUM_EXAMPLES)]
  assert splits.num_classes == num_classes
  assert splits.mean == datasets.DATASETS[name].mean
  assert splits.class_names == datasets.DATASETS[name].class_names
  assert isinstance(splits.train, base.ArraySource)
  assert splits.train.num_examples == splits.test.num_examples == NUM_EXAMPLES
  assert splits.train.image_shape == shape
  images, labels = splits.train.get(np.arange(NUM_EXAMPLES))
  assert images.dtype == np.uint8 and labels.dtype == np.int32
  np.testing.assert_array_equal(images, np.stack([r['image'] for r in expected]))
  np.testing.assert_array_equal(labels, [r['label'] for r in expected])
  assert labels.min() >= 0 and labels.max() < num_classes


def test_imagenet_random_access_crops_and_resizes():
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    splits = sources.load_dataset(data_config(
        name='imagenet2012', image_size=16, random_resized_crop=True,
        max_train_examples=4))
    assert splits.num_classes == 1000
    assert splits.train.num_examples == 4
    assert splits.test.num_examples == NUM_EXAMPLES
    assert splits.train.image_shape == splits.test.image_shape == (16, 16, 3)
    images, labels = splits.train.get(np.array([3, 0, 3]))
    assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
    assert labels[0] == labels[2] and labels.dtype == np.int32
    # Evaluation is a deterministic centre crop.
    first, _ = splits.test.get(np.arange(NUM_EXAMPLES))
    second, _ = splits.test.get(np.arange(NUM_EXAMPLES))
    np.testing.assert_array_equal(first, second)


def test_imagenet_needs_an_image_size():
  with pytest.raises(base.DataError, match='config.data.image_size'):
    sources.load_dataset(data_config(name='imagenet2012'))


def test_imagenet_error_says_where_to_put_the_files(tmp_path):
  # No mock: an empty data_dir, so tfds would need the manual download.
  with pytest.raises(base.DataError) as error:
    tfds_source.load_random_access(
        'imagenet2012', True, str(tmp_path), image_size=8)
  message = str(error.value)
  assert str(tmp_path / 'downloads' / 'manual') in message
  assert 'ILSVRC2012_img_train.tar' in message
  assert 'ILSVRC2012_img_val.tar' in message


def test_unprepared_without_download(tmp_path):
  with pytest.raises(base.DataError, match='not prepared'):
    tfds_source.load_in_memory('cifar10', True, str(tmp_path), download=False)


def test_center_crop_box():
  # 256 x 320 at 224: a 224 x 224 square in the middle (224 = 224/256 * 256).
  assert tfds_source.center_crop_box(256, 320, 224) == (16, 48, 224, 224)
  assert tfds_source.center_crop_box(10, 14, 10, crop_padding=0) == (0, 2, 10, 10)


def test_random_resized_crop_box_stays_inside():
  rng = np.random.default_rng(0)
  for height, width in [(50, 80), (7, 300), (3, 3)]:
    for _ in range(50):
      top, left, h, w = tfds_source.random_resized_crop_box(height, width, rng)
      assert 0 <= top and top + h <= height and 0 < h
      assert 0 <= left and left + w <= width and 0 < w


def test_cropping_source_on_plain_records():
  rng = np.random.default_rng(1)
  color = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, (12, 9), dtype=np.uint8)
  records = [{'image': color, 'label': 3}, {'image': gray[..., None], 'label': 5}]
  source = tfds_source.CroppingSource(records, image_size=10, channels=3)
  images, labels = source.get(np.array([0]))
  np.testing.assert_array_equal(labels, [3])
  # Centre crop at full scale (crop padding aside) keeps the pixels: compare with the
  # same crop taken by hand at crop_padding=0.
  box = tfds_source.center_crop_box(10, 14, 10)
  np.testing.assert_array_equal(
      images[0], tfds_source.crop_and_resize(color, box, 10))
  np.testing.assert_array_equal(
      tfds_source.crop_and_resize(color, (0, 2, 10, 10), 10), color[:, 2:12])
  gray_source = tfds_source.CroppingSource(
      records[1:], image_size=4, channels=1, random_resized_crop=True, seed=0)
  images, labels = gray_source.get(np.array([0, 0]))
  assert images.shape == (2, 4, 4, 1) and list(labels) == [5, 5]


def test_random_crops_depend_on_step_and_record_only():
  """A resumed run re-reads a step with the crops the interrupted run used: the crop
  is a function of (seed, step, the record's id), not of a generator's history, nor of
  the record's index (a record inserted before it changes nothing)."""
  rng = np.random.default_rng(2)
  records = [{'image': rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), 'label': i}
             for i in range(4)]

  def source():
    return tfds_source.CroppingSource(records, image_size=8, channels=3,
                                      random_resized_crop=True, seed=3)

  first, _ = source().get(np.array([1, 2, 3]), step=5)
  reused = source()
  reused.get(np.array([0, 1, 2, 3]), step=4)  # earlier reads change nothing
  again, _ = reused.get(np.array([1, 2, 3]), step=5)
  np.testing.assert_array_equal(again, first)
  alone, _ = source().get(np.array([2]), step=5)  # nor does the rest of the batch
  np.testing.assert_array_equal(alone[0], first[1])
  later, _ = source().get(np.array([1, 2, 3]), step=6)
  assert not np.array_equal(later, first)  # another step, other crops
  shifted = tfds_source.CroppingSource(
      [{'image': np.zeros((40, 50, 3), np.uint8), 'label': 9}] + records, image_size=8,
      channels=3, random_resized_crop=True, seed=3)
  moved, _ = shifted.get(np.array([2, 3, 4]), step=5)  # the same records, one index on
  np.testing.assert_array_equal(moved, first)


def test_read_records_uses_batched_reads():
  class Batched(list):
    def __getitems__(self, indices):
      self.batched = list(indices)
      return [self[i] for i in indices]

  records = Batched([{'label': i} for i in range(5)])
  assert tfds_source.read_records(records, [4, 1]) == [{'label': 4}, {'label': 1}]
  assert records.batched == [4, 1]
  assert tfds_source.read_records([7, 8, 9], [2, 0]) == [9, 7]

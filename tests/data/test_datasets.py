"""The dataset registry: every spec is self-consistent and every reader reads it."""
import dataclasses

import numpy as np
import pytest

from configs import quickstart
from image_classification import config as config_lib
from image_classification.data import base
from image_classification.data import catalog
from image_classification.data import datasets
from image_classification.data import sources
from image_classification.data.readers import tfds_source


@pytest.mark.parametrize('name', datasets.names())
def test_every_spec_is_consistent(name):
  spec = datasets.DATASETS[name]
  assert spec.name == name
  datasets.check_spec(spec)
  if spec.image_shape is not None:
    channels = spec.image_shape[-1]
    assert len(spec.mean) == len(spec.std) == channels
  if spec.class_names:
    assert len(spec.class_names) == spec.num_classes
    assert all(isinstance(n, str) and n for n in spec.class_names)
  if spec.local_format is not None:
    assert spec.local_format in sources.LOCAL_READERS
  if spec.tfds_name is not None:  # a dry run answers without reading anything
    config = quickstart.get_config().data
    config.name, config.image_size = name, 64
    splits = catalog.dry_run_splits(config)
    assert splits.train.num_examples == spec.num_train
    assert splits.num_classes == spec.num_classes and splits.mean == spec.mean


@pytest.mark.parametrize('broken, why', [
    (dict(image_shape=(28, 28, 1), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
     'channels'),
    (dict(num_classes=3, class_names=('a', 'b')), 'class names'),
    (dict(num_classes=1), 'num_classes'),
    (dict(std=None), 'together'),
    (dict(num_train=None), 'tfds dataset needs'),
    (dict(image_shape=(0, 0, 1)), 'random_access'),
    (dict(image_shape=(28, 0, 1)), 'image_shape'),
])
def test_inconsistent_specs_are_refused(broken, why):
  good = datasets.DATASETS['mnist']
  with pytest.raises(ValueError, match=why):
    datasets.check_spec(dataclasses.replace(good, **broken))


def test_register_refuses_a_second_spec_and_a_spec_without_a_source():
  with pytest.raises(ValueError, match='registered already'):
    datasets.register(datasets.DATASETS['mnist'])
  with pytest.raises(ValueError, match='needs a source'):
    datasets.register(datasets.DatasetSpec('nowhere'))
  assert 'nowhere' not in datasets.names()


def test_a_registered_dataset_is_known_everywhere(monkeypatch):
  """One spec entry is all a new tfds dataset needs: validation, loader, catalog."""
  monkeypatch.setitem(datasets.DATASETS, 'emnist_test', datasets.DatasetSpec(
      'emnist_test', num_classes=47, image_shape=(28, 28, 1), mean=(0.17,),
      std=(0.33,), tfds_name='emnist/balanced', num_train=112_800, num_test=18_800))
  config = quickstart.get_config()
  config.data.name = 'emnist_test'
  config_lib.validate(config, 1, dry_run=True)
  splits = catalog.dry_run_splits(config.data)
  assert splits.train.num_examples == 112_800 and splits.num_classes == 47
  spec = tfds_source._spec('emnist_test')  # pylint: disable=protected-access
  assert spec.tfds_name == 'emnist/balanced'
  config.data.path = '/some/where'
  with pytest.raises(base.DataError, match='not read from local files'):
    sources.load_dataset(config.data)


def test_validation_error_lists_the_registry():
  config = quickstart.get_config()
  config.data.name = 'cifar11'
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.validate(config, 1)
  assert str(list(datasets.names())) in str(error.value)
  with pytest.raises(base.DataError, match='choose one of'):
    datasets.get('cifar11')


def test_tfds_source_refuses_datasets_it_does_not_read():
  with pytest.raises(base.DataError, match=r"not a tfds dataset.*'mnist'"):
    tfds_source._spec('npz')  # pylint: disable=protected-access


def test_splits_take_the_spec_constants_or_generic_ones():
  source = base.ArraySource(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int32))
  splits = datasets.DATASETS['npz'].make_splits(source, source, num_classes=5)
  assert splits.num_classes == 5 and splits.mean == (0.5,) * 3
  assert splits.class_names == ()
  splits = datasets.DATASETS['cifar10'].make_splits(source, source, num_classes=5)
  assert splits.num_classes == 10 and splits.class_names[-1] == 'truck'

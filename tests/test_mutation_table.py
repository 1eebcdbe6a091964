"""The planted bugs of tests/mutation_check.py still apply to the code as it is.

Each mutation is an exact text replacement; when the code it targets changes, the
mutation would stop planting anything and the table in docs/testing.md would claim
checks that no longer run. This keeps every mutation's text present exactly once and
every test it names present.
"""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('mutation_check',
                                               ROOT / 'tests' / 'mutation_check.py')
mutation_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation_check)


@pytest.mark.parametrize('name', sorted(mutation_check.MUTATIONS))
def test_the_mutation_still_plants(name):
  path, old, new, tests = mutation_check.MUTATIONS[name]
  text = (ROOT / path).read_text()
  assert text.count(old) == 1, f'{name}: {old!r} occurs {text.count(old)} times in {path}'
  assert old != new
  for test in tests:
    file, _, function = test.partition('::')
    source = (ROOT / file).read_text()  # a missing file fails here
    assert not function or f'def {function}(' in source, f'{name}: {test} does not exist'

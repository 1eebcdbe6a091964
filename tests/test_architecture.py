"""The package's layering, checked from the source (docs/architecture.md).

A module may import only from its own layer or lower ones; the module graph has no
cycles; no module imports a package module inside a function (so nothing is imported
inside a traced function, and every dependency shows at the top of the file); and the
DP core (privacy/) knows nothing of configs, run files or models.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = 'image_classification'

# Lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS = (
    ('image_classification.privacy', 'image_classification.workdir.run_files',
     'image_classification.registry', 'image_classification.stop_signals',
     'image_classification.errors', 'image_classification'),
    ('image_classification.data', 'image_classification.input',
     'image_classification.models', 'image_classification.optimizers',
     'image_classification.hosts'),
    ('image_classification.reporting',),
    # training.config_checks and audit.config_checks: their sections' checks, which
    # config.validate calls in order; they import nothing of their packages.
    ('image_classification.config', 'image_classification.config_file',
     'image_classification.plan', 'image_classification.privacy_calculator',
     'image_classification.training.config_checks',
     'image_classification.audit.config_checks'),
    ('image_classification.workdir',),
    ('image_classification.command_line', 'image_classification.hosts.command_line'),
    ('image_classification.trained',),
    ('image_classification.training',),
    ('image_classification.tools',),
    ('image_classification.audit',),
    ('image_classification.runs',),
    ('image_classification.sweeps',),
    ('image_classification.api',),
    ('launch',),
)

# Heavy or optional third-party modules that may be imported lazily, inside the one
# function that needs them, so that the core imports fast without them.
LAZY_ALLOWED = ('tensorflow', 'tensorflow_datasets', 'wandb', 'matplotlib', 'PIL',
                'sklearn', 'orbax', 'jax_privacy', 'tqdm', 'importlib', 'kymatio')

# What the DP core must not know about.
CORE_FORBIDDEN = ('ml_collections', 'image_classification.models',
                  'image_classification.data', 'image_classification.config',
                  'image_classification.plan', 'image_classification.workdir.run_files',
                  'image_classification.training', 'image_classification.reporting')


def _module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix('')
  parts = list(rel.parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '.'.join(parts)


def _sources() -> dict[str, pathlib.Path]:
  files = {_module_name(p): p for p in (ROOT / PACKAGE).rglob('*.py')}
  files['launch'] = ROOT / 'launch.py'
  return files


def _resolve(module: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
  if not node.level:
    return node.module or ''
  base = module.split('.')
  if path.name != '__init__.py':
    base = base[:-1]
  base = base[:len(base) - node.level + 1]
  return '.'.join(base + ([node.module] if node.module else []))


def _imports(module: str, path: pathlib.Path):
  """(imported module, line, inside a function) for every import statement."""
  tree = ast.parse(path.read_text(), filename=str(path))
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.Lambda))
      if isinstance(child, ast.Import):
        for alias in child.names:
          found.append((alias.name, child.lineno, in_function))
      elif isinstance(child, ast.ImportFrom):
        base = _resolve(module, path, child)
        for alias in child.names:
          # `from pkg import mod` imports pkg.mod when it is a module.
          full = f'{base}.{alias.name}'
          found.append((full if full in SOURCES else base, child.lineno, in_function))
      visit(child, nested)

  visit(tree, False)
  return found


def _owner(name: str) -> str:
  """The package module an import refers to (a name inside a module maps to it)."""
  while name and name not in SOURCES:
    name = name.rpartition('.')[0]
  return name


def _layer(module: str) -> int:
  best, layer = -1, None
  for i, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + '.')) and len(prefix) > best:
        best, layer = len(prefix), i
  assert layer is not None, f'{module} is in no layer; add it to LAYERS'
  return layer


SOURCES = _sources()
EDGES = {m: [(i, line, inner) for i, line, inner in _imports(m, p)]
         for m, p in SOURCES.items()}


def _internal(name: str) -> bool:
  return name == PACKAGE or name.startswith(PACKAGE + '.') or name == 'launch'


def test_every_module_has_a_layer():
  for module in SOURCES:
    _layer(module)


def _upward(edges) -> list[str]:
  upward = []
  for module, imports in edges.items():
    for name, line, _ in imports:
      if _internal(name):
        target = _owner(name)
        if target and _layer(target) > _layer(module):
          upward.append(f'{module}:{line} imports {target} '
                        f'(layer {_layer(target)} > {_layer(module)})')
  return upward


def _cycles(edges) -> list[str]:
  graph = {m: sorted({_owner(n) for n, _, _ in imports if _internal(n)} - {m, ''})
           for m, imports in edges.items()}
  # A package's __init__ is imported by its modules implicitly; only real edges count.
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = 'open'
    stack.append(m)
    for n in graph.get(m, ()):
      if state.get(n) == 'open':
        cycles.append(' -> '.join(stack[stack.index(n):] + [n]))
      elif n not in state:
        visit(n)
    stack.pop()
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m)
  return cycles


def test_no_import_from_a_higher_layer():
  upward = _upward(EDGES)
  assert not upward, '\n'.join(upward)


def test_no_import_cycles():
  cycles = _cycles(EDGES)
  assert not cycles, '\n'.join(cycles)


# launch.py imports jax and the package inside main(), after flag parsing: --host_devices
# must set XLA_FLAGS before jax is imported, and --help stays instant. The same holds
# for the modules that define its flags (each package's command_line.py): their
# handlers import what they need when they run.
LAZY_MODULES = ('launch',)


def _lazy(module: str) -> bool:
  return module in LAZY_MODULES or module.rpartition('.')[2] == 'command_line'


def test_no_package_imports_inside_functions():
  inner = [f'{m}:{line} imports {name} inside a function'
           for m, imports in EDGES.items() for name, line, in_function in imports
           if in_function and not _lazy(m) and (_internal(name) or
                               not name.split('.')[0] in LAZY_ALLOWED)]
  assert not inner, '\n'.join(inner)


def test_the_flag_modules_import_no_jax():
  """launch.py and every command_line module it reads its flags from import nothing of
  JAX (nor numpy): --help is instant and --host_devices takes effect."""
  flag_modules = sorted(m for m in SOURCES if _lazy(m))
  assert len(flag_modules) >= 7, flag_modules
  code = ('import sys\n' + ''.join(f'import {m}\n' for m in flag_modules) +
          "print(sorted(m for m in ('jax', 'numpy', 'flax') if m in sys.modules))")
  proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == '[]', proc.stdout


@pytest.mark.parametrize('module', sorted(m for m in SOURCES
                                          if _layer(m) == 0 and m != PACKAGE))
def test_the_dp_core_knows_nothing_of_configs_files_or_models(module):
  bad = [f'{module}:{line} imports {name}' for name, line, _ in EDGES[module]
         if any(name == f or name.startswith(f + '.') for f in CORE_FORBIDDEN)
         and not module.startswith('image_classification.workdir.run_files')]
  if module.startswith('image_classification.privacy'):
    text = SOURCES[module].read_text()
    if 'open(' in text or 'os.path' in text:
      bad.append(f'{module} reads or writes files')
  assert not bad, '\n'.join(bad)


def test_the_checks_catch_a_planted_upward_import_and_cycle():
  """The checks can fail: privacy.noise importing training.loop is an upward import,
  and (since training imports privacy) closes a cycle."""
  planted = dict(EDGES)
  planted['image_classification.privacy.noise'] = (
      EDGES['image_classification.privacy.noise'] +
      [('image_classification.training.loop', 1, False)])
  assert any('privacy.noise:1 imports image_classification.training.loop' in u
             for u in _upward(planted))
  assert any('image_classification.privacy.noise' in c for c in _cycles(planted))


# ---------------------------------------------------------------------- sizes
# A folder or a function past these is a sign that two concerns share it
# (docs/architecture.md): split it by concern rather than raise the limit.
MAX_FOLDER_LINES = 2000
MAX_FUNCTION_LINES = 120
MAX_LAUNCH_LINES = 150


def _folder_lines() -> dict[str, int]:
  """Lines of the .py files directly in each folder of the package."""
  lines = {}
  for path in SOURCES.values():
    if path.name != 'launch.py':
      folder = str(path.parent.relative_to(ROOT))
      lines[folder] = lines.get(folder, 0) + len(path.read_text().splitlines())
  return lines


def _long_functions(max_lines: int) -> list[str]:
  long = []
  for module, path in SOURCES.items():
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > max_lines:
          long.append(f'{module}.{node.name}: {length} lines')
  return long


def test_no_folder_of_the_package_is_over_2000_lines():
  big = {f: n for f, n in _folder_lines().items() if n > MAX_FOLDER_LINES}
  assert not big, big


def test_no_function_is_over_120_lines():
  long = _long_functions(MAX_FUNCTION_LINES)
  assert not long, '\n'.join(long)


def test_launch_is_a_switchboard():
  lines = len((ROOT / 'launch.py').read_text().splitlines())
  assert lines < MAX_LAUNCH_LINES, f'launch.py has {lines} lines'


def test_the_size_checks_can_fail():
  assert _long_functions(40), 'some function is over 40 lines: the check sees them'
  assert max(_folder_lines().values()) > 500


def _package_import_modules(source: str) -> list[int]:
  """Lines of ``importlib.import_module('image_classification...')`` (a literal or an
  f-string that starts so) in ``source``: a package module loaded out of sight of the
  checks above. A user's module (models/custom.py, a sweep file) is named by a
  variable and passes."""
  lines = []
  for node in ast.walk(ast.parse(source)):
    if not (isinstance(node, ast.Call) and node.args and (
        (isinstance(node.func, ast.Attribute) and node.func.attr == 'import_module') or
        (isinstance(node.func, ast.Name) and node.func.id in ('import_module',
                                                              '__import__')))):
      continue
    arg = node.args[0]
    if isinstance(arg, ast.JoinedStr) and arg.values:
      arg = arg.values[0]
    if isinstance(arg, ast.Constant) and str(arg.value).startswith(PACKAGE):
      lines.append(node.lineno)
  return lines


def test_package_modules_are_imported_by_import_lines():
  """Registries fill by import lines (e.g. models/__init__.py), not import_module."""
  found = [f'{m}:{line} loads a package module with import_module; import it'
           for m, path in SOURCES.items()
           for line in _package_import_modules(path.read_text())]
  assert not found, '\n'.join(found)


def test_the_import_module_check_catches_a_planted_call():
  planted = ("import importlib\n"
             "def f(name, where):\n"
             "  importlib.import_module(f'image_classification.models.{name}')\n"
             "  importlib.import_module('image_classification.models.cnn')\n"
             "  return importlib.import_module(where)\n")  # a user's module: allowed
  assert _package_import_modules(planted) == [3, 4]


# The project stands on its own: no tracked file points at a folder beside the
# repository (a datasets or peers folder of one machine). Spelled in two halves so
# that this file does not match itself.
_OUTSIDE = ('..' + '/shared', 'shared' + '/data/', 'shared' + '/peers')


def _files_pointing_outside(paths) -> list[str]:
  found = []
  for path in paths:
    try:
      text = pathlib.Path(path).read_text(encoding='utf-8')
    except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
      continue
    for number, line in enumerate(text.splitlines(), 1):
      if any(marker in line for marker in _OUTSIDE):
        found.append(f'{path}:{number}: {line.strip()[:100]}')
  return found


def test_no_tracked_file_points_outside_the_repository():
  listed = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True)
  if listed.returncode != 0:
    pytest.fail(f'git ls-files failed in {ROOT}: {listed.stderr}')
  paths = [ROOT / p for p in listed.stdout.splitlines()]
  assert len(paths) > 100, 'git ls-files listed too few files'
  assert not _files_pointing_outside(paths), _files_pointing_outside(paths)


def test_the_outside_path_check_catches_a_planted_path(tmp_path):
  planted = tmp_path / 'notes.md'
  planted.write_text('data in ' + _OUTSIDE[0] + '/data/mnist\n')
  assert len(_files_pointing_outside([planted, tmp_path / 'missing.md'])) == 1

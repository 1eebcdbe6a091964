#!/usr/bin/env bash
# The accelerator figures of results/benchmarks.md in one run (< 8 minutes on one
# H100/H200), written to ONE JSON file:
#   1. ours: `launch.py --benchmark` of configs/cifar10_wrn_16_4_eps8.py at the paper's
#      shape (batch 256 x augmult 16, micro-batch 64 per device), float32 and bfloat16
#      (config.training.compute_dtype), DP step against the same model's
#      non-private step;
#   2. peers at batch 256 (the peer libraries' benchmark folder named by PEERS):
#      bench_jax.py (jax_nonprivate, jax_dp_plain, jax_privacy if installed) and
#      bench_torch.py --device cuda --tf32 (torch_nonprivate, opacus_hooks), skipped
#      where their Python lacks the package or there is no CUDA;
#   3. end to end: `launch.py --config=configs/cifar10_wrn_16_4_eps8.py` for a few
#      dozen steps (25, bfloat16) on CIFAR-10-format files of random images
#      (results/make_fake_cifar10.py), images/s from metrics.jsonl and summary.json.
#
# Usage (from anywhere):  bash results/gpu_benchmark.sh [OUT.json]
#   default OUT: results/gpu_benchmark.json
# Environment (sizes, so that it can be tried on a CPU first):
#   GPU_BENCH_TINY=1   tiny shapes: batch 8 x augmult 2, micro-batch 4, WRN-10-1,
#                      3 end-to-end steps, 2 x 40 + 40 fake images, no CUDA peers
#                      (the JAX peer at batch 8, one repetition)
#   PYTHON             the project's Python (default: python3)
#   PEER_PYTHON        Python for the torch peers (default: PEERS/.venv/bin/python
#                      if present, else PYTHON); PEERS  the folder of the peer
#                      benchmarks (bench_jax.py, bench_torch.py); unset: skipped
#   BENCH_BATCH BENCH_AUGMULTS BENCH_MICRO BENCH_IMPLS BENCH_DTYPES  our benchmark
#   PEER_BATCH PEER_REPS  peers;  E2E_STEPS E2E_DTYPE  the end-to-end run
#   WORK               scratch folder (default: a new mktemp -d)
#   STAGE_TIMEOUT_BENCH / _PEER / _E2E  seconds per stage (defaults 170 / 30 per peer
#                      / 150: at most 8 minutes in all with the 5 peers)
#   GPU_BENCH_STAGES   which stages to run (default "ours peers e2e")
# A stage that fails or times out is recorded as such in the JSON; the script goes on.
# A timeout sends SIGINT: the benchmark then still writes the rows it measured and
# the training run its metrics so far. A second run reuses compiled steps (the
# persistent compilation cache of launch.py).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-$HERE/gpu_benchmark.json}"
PY="${PYTHON:-python3}"
PEERS="${PEERS:-}"
WORK="${WORK:-$(mktemp -d)}"
TINY="${GPU_BENCH_TINY:-0}"
STAGES=" ${GPU_BENCH_STAGES:-ours peers e2e} "
export WANDB_MODE=disabled WANDB_SILENT=true

if [ "$TINY" = 1 ]; then
  BENCH_BATCH="${BENCH_BATCH:-8}"; BENCH_AUGMULTS="${BENCH_AUGMULTS:-2}"
  BENCH_MICRO="${BENCH_MICRO:-4}"; PEER_BATCH="${PEER_BATCH:-8}"
  PEER_REPS="${PEER_REPS:-1}"; E2E_STEPS="${E2E_STEPS:-3}"
  E2E_BATCH=8; E2E_AUGMULT=2; E2E_MICRO=4
  FAKE_ARGS="--train_per_batch=40 --test=40"
  MODEL_OVERRIDES="--config.model.kwargs.depth=10 --config.model.kwargs.width=1"
  PEER_RUNS="jax:jax_nonprivate"
  PEER_EXTRA="--rep_seconds=0.1"
else
  BENCH_BATCH="${BENCH_BATCH:-256}"; BENCH_AUGMULTS="${BENCH_AUGMULTS:-16}"
  BENCH_MICRO="${BENCH_MICRO:-64}"; PEER_BATCH="${PEER_BATCH:-256}"
  PEER_REPS="${PEER_REPS:-3}"; E2E_STEPS="${E2E_STEPS:-25}"
  E2E_BATCH=4096; E2E_AUGMULT=16; E2E_MICRO=64  # the config's own values
  FAKE_ARGS=""
  MODEL_OVERRIDES=""
  PEER_RUNS="jax:jax_nonprivate jax:jax_dp_plain jax:jax_privacy torch:torch_nonprivate torch:opacus_hooks"
  PEER_EXTRA="--rep_seconds=1"
fi
BENCH_IMPLS="${BENCH_IMPLS:-fast}"
BENCH_DTYPES="${BENCH_DTYPES:-float32,bfloat16}"
E2E_DTYPE="${E2E_DTYPE:-bfloat16}"
T_BENCH="${STAGE_TIMEOUT_BENCH:-170}"
T_PEER="${STAGE_TIMEOUT_PEER:-30}"
T_E2E="${STAGE_TIMEOUT_E2E:-150}"
if [ -z "${PEER_PYTHON:-}" ]; then
  if [ -x "$PEERS/.venv/bin/python" ]; then PEER_PYTHON="$PEERS/.venv/bin/python"; else PEER_PYTHON="$PY"; fi
fi
mkdir -p "$WORK" "$(dirname "$OUT")"
LOG="$WORK/log"; mkdir -p "$LOG"
START=$(date +%s)
stage() { echo "== $(( $(date +%s) - START ))s: $*" >&2; }

cd "$ROOT" || exit 1
# ------------------------------------------------------------------ 0. environment
stage environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none; } > "$LOG/gpu.txt"
"$PY" - > "$LOG/imports.json" 2> "$LOG/imports.stderr" <<'EOF'
import json, sys
import launch  # noqa: F401  the training path, as launch.py imports it
from image_classification.tools import benchmark, loop  # noqa: F401
import jax
heavy = [m for m in ('tensorflow', 'tensorflow_datasets', 'wandb') if m in sys.modules]
print(json.dumps({'heavy_modules_imported': heavy, 'jax': jax.__version__,
                  'backend': jax.default_backend(),
                  'devices': [str(d) for d in jax.devices()]}))
EOF

# ------------------------------------------------------------------ 1. ours
if [[ "$STAGES" == *" ours "* ]]; then
rm -rf "$WORK/bench" "$LOG/bench.rc"
stage "ours: --benchmark B=$BENCH_BATCH K=$BENCH_AUGMULTS micro=$BENCH_MICRO $BENCH_DTYPES $BENCH_IMPLS"
timeout -s INT -k 30 "$T_BENCH" "$PY" launch.py --config=configs/cifar10_wrn_16_4_eps8.py \
  --workdir="$WORK/bench" --benchmark --benchmark_batch_sizes="$BENCH_BATCH" \
  --benchmark_augmults="$BENCH_AUGMULTS" --benchmark_implementations="$BENCH_IMPLS" \
  --benchmark_dtypes="$BENCH_DTYPES" --config.training.micro_batch_size="$BENCH_MICRO" \
  $MODEL_OVERRIDES > "$LOG/bench.stdout" 2> "$LOG/bench.stderr"
echo $? > "$LOG/bench.rc"
fi

# ------------------------------------------------------------------ 2. peers
if [[ "$STAGES" == *" peers "* ]]; then : > "$LOG/peers.jsonl"; else PEER_RUNS=""; fi
for run in $PEER_RUNS; do
  kind="${run%%:*}"; workload="${run#*:}"
  stage "peer $workload B=$PEER_BATCH"
  if [ ! -d "$PEERS" ]; then
    echo "{\"workload\": \"$workload\", \"skipped\": \"no peers folder (PEERS=$PEERS)\"}" >> "$LOG/peers.jsonl"; continue
  fi
  if [ "$kind" = torch ]; then
    if ! "$PEER_PYTHON" -c 'import torch, opacus, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      echo "{\"workload\": \"$workload\", \"skipped\": \"$PEER_PYTHON has no torch+opacus with CUDA\"}" >> "$LOG/peers.jsonl"; continue
    fi
    cmd=("$PEER_PYTHON" "$PEERS/bench_torch.py" --device cuda --tf32)
  else
    if [ "$workload" = jax_privacy ] && ! "$PY" -c 'import jax_privacy' 2>/dev/null; then
      echo "{\"workload\": \"$workload\", \"skipped\": \"$PY has no jax_privacy\"}" >> "$LOG/peers.jsonl"; continue
    fi
    cmd=("$PY" "$PEERS/bench_jax.py" $PEER_EXTRA)
  fi
  if ! timeout "$T_PEER" "${cmd[@]}" --workload "$workload" --batch "$PEER_BATCH" \
       --reps "$PEER_REPS" >> "$LOG/peers.jsonl" 2> "$LOG/peer_$workload.stderr"; then
    echo "{\"workload\": \"$workload\", \"failed\": true, \"stderr_tail\": $(tail -3 "$LOG/peer_$workload.stderr" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" >> "$LOG/peers.jsonl"
  fi
done

# ------------------------------------------------------------------ 3. end to end
if [[ "$STAGES" == *" e2e "* ]]; then
rm -rf "$WORK/cifar" "$WORK/e2e" "$LOG/e2e.rc"
stage "end to end: fake CIFAR-10, $E2E_STEPS steps, $E2E_DTYPE"
"$PY" "$HERE/make_fake_cifar10.py" "$WORK/cifar" $FAKE_ARGS > /dev/null 2> "$LOG/fake.stderr"
timeout -s INT -k 30 "$T_E2E" "$PY" launch.py --config=configs/cifar10_wrn_16_4_eps8.py \
  --workdir="$WORK/e2e" --config.data.path="$WORK/cifar" \
  --config.training.num_steps="$E2E_STEPS" --config.training.compute_dtype="$E2E_DTYPE" \
  --config.training.batch_size="$E2E_BATCH" --config.data.augmult="$E2E_AUGMULT" \
  --config.training.micro_batch_size="$E2E_MICRO" --config.wandb.mode=disabled \
  --config.training.log_every_steps=5 --config.training.checkpoint_every_minutes=0 \
  $MODEL_OVERRIDES > "$LOG/e2e.stdout" 2> "$LOG/e2e.stderr"
echo $? > "$LOG/e2e.rc"
fi

# ------------------------------------------------------------------ 4. one JSON file
stage "writing $OUT"
"$PY" - "$OUT" "$WORK" "$TINY" "$(( $(date +%s) - START ))" <<'EOF'
import json, os, sys
out, work, tiny, elapsed = sys.argv[1], sys.argv[2], sys.argv[3] == '1', int(sys.argv[4])
log = os.path.join(work, 'log')

def read(path, default=None):
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return default

def status(name):  # the stage's exit status, None if the stage was not run
  text = read(os.path.join(log, name + '.rc'))
  return None if text is None else int(text.strip() or 1)

def tail(path, n=8):
  return ''.join((read(path, '') or '').splitlines(True)[-n:])

result = {'tiny': tiny, 'elapsed_sec': elapsed, 'gpu': (read(os.path.join(log, 'gpu.txt'), '') or '').strip(),
          'environment': json.loads(read(os.path.join(log, 'imports.json'), 'null') or 'null')}
bench = json.loads(read(os.path.join(work, 'bench', 'benchmark.json'), 'null') or 'null')
result['ours'] = {'exit_status': status('bench'),
                  'rows': [], 'stderr_tail': None}
if bench:
  result['ours'].update(device=bench['device'], model=bench['model'],
                        num_params=bench['num_params'], error=bench.get('error'))
  keep = ('batch_size', 'augmult', 'micro_batch_size', 'per_example_grads', 'compute_dtype',
          'dp_images_per_sec', 'nonprivate_images_per_sec', 'dp_over_nonprivate_time',
          'dp_step_sec', 'nonprivate_step_sec', 'dp_compile_sec', 'peak_memory_bytes')
  result['ours']['rows'] = [{k: r.get(k) for k in keep} for r in bench['rows']]
if result['ours']['exit_status']:
  result['ours']['stderr_tail'] = tail(os.path.join(log, 'bench.stderr'))
peers = []
for line in (read(os.path.join(log, 'peers.jsonl'), '') or '').splitlines():
  try:
    peers.append(json.loads(line))
  except ValueError:
    pass
result['peers'] = peers
e2e_dir = os.path.join(work, 'e2e')
rows = [json.loads(l) for l in (read(os.path.join(e2e_dir, 'metrics.jsonl'), '') or '').splitlines() if l.strip()]
summary = json.loads(read(os.path.join(e2e_dir, 'summary.json'), 'null') or 'null')
e2e = {'exit_status': status('e2e'),
       'metrics_rows': [{k: r.get(k) for k in ('step', 'images_per_sec', 'train_loss')} for r in rows if 'images_per_sec' in r]}
if summary:
  e2e.update({k: summary.get(k) for k in ('steps', 'wall_time_sec', 'startup_sec', 'device', 'test_accuracy')})
if e2e['metrics_rows']:
  e2e['images_per_sec_last_row'] = e2e['metrics_rows'][-1]['images_per_sec']
if e2e['exit_status']:
  e2e['stderr_tail'] = tail(os.path.join(log, 'e2e.stderr'))
result['end_to_end'] = e2e

targets = {}
for r in result['ours']['rows']:
  if r['compute_dtype'] == 'float32' and r.get('dp_over_nonprivate_time') is not None:
    targets['float32_dp_over_nonprivate_time'] = r['dp_over_nonprivate_time']
    targets['float32_dp_over_nonprivate_time_met (<= 1.3)'] = r['dp_over_nonprivate_time'] <= 1.3
if 'images_per_sec_last_row' in e2e:
  targets['end_to_end_images_per_sec'] = e2e['images_per_sec_last_row']
  targets['end_to_end_met (>= 60000, bfloat16, one H100/H200)'] = e2e['images_per_sec_last_row'] >= 60000
if tiny:
  targets['note'] = 'GPU_BENCH_TINY=1: tiny shapes, the targets do not apply'
result['targets'] = targets
with open(out, 'w') as f:
  json.dump(result, f, indent=2)

# A readable digest on stdout.
print(f"# gpu_benchmark ({'TINY' if tiny else 'full'}), {elapsed} s, GPU: {result['gpu'] or 'none'}")
print('| what | B x K | dtype | DP img/s | non-private img/s | DP/non-private |')
print('|---|---|---|---|---|---|')
for r in result['ours']['rows']:
  print(f"| ours, {r['per_example_grads']} | {r['batch_size']} x {r['augmult']} | {r['compute_dtype']} | "
        f"{r['dp_images_per_sec']:.1f} | {r.get('nonprivate_images_per_sec') or float('nan'):.1f} | "
        f"{r.get('dp_over_nonprivate_time') or float('nan'):.2f} |")
for p in peers:
  if 'images_per_s' in p:
    print(f"| peer {p['workload']} | {p['batch']} x 1 | float32 | {p['images_per_s']:.1f} | | |")
  else:
    print(f"| peer {p['workload']} | | | {p.get('skipped') or 'failed'} | | |")
if 'images_per_sec_last_row' in e2e:
  print(f"| end to end, {e2e.get('steps')} steps | | | {e2e['images_per_sec_last_row']:.1f} | | |")
elif e2e['exit_status'] is not None:
  print(f"| end to end | | | failed (exit {e2e['exit_status']}) | | |")
print(json.dumps(targets))
EOF
stage "done; figures in $OUT, logs in $LOG"

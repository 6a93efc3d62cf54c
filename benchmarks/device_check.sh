#!/usr/bin/env bash
# bash benchmarks/device_check.sh
#
# The check of jaxformer on a machine with an NVIDIA GPU, run from the repository root with the
# machine's own python3 (jax[cuda], flax, optax, torch, transformers, pytest-xdist installed; no
# .venv, no package index). Within DEVICE_CHECK_TOTAL_S seconds it
#   (a) installs the wheels carried in .whl/ (benchmarks/fetch_device_wheels.sh) into a site folder
#       under $TMPDIR;
#   (b) runs the test suite on the GPU, 8 pytest workers sharing it (JAXFORMER_DEVICE_CHECK=1:
#       tests of the dev packages the machine lacks skip with a reason; tests/conftest.py);
#   (c) runs `python3 -m benchmarks.suite --suite full --precision bf16`, then, when at least
#       DEVICE_CHECK_MIXED_MIN_S seconds are left for it, the model section again in mixed_bf16
#       (without torch.compile, which the bf16 run already measured) into results/mixed_bf16/;
#   (d) runs the torch reference timings, $TORCH_ANCHOR (default ../shared/gpu/torch_anchor.py),
#       when that file exists;
#   (e) packs results/<device>/ (and results/mixed_bf16/<device>/) into $OUT/results.tar.gz and
#       prints a summary table last.
# Logs go to $OUT (tests.log, bench.log, bench_mixed.log, anchor.log, summary.txt) when OUT is
# set, else to a fresh folder under /tmp. Exit status: the test pass's when it failed, else the
# bench's; the bench runs whatever the tests did.
#
# Time caps, in seconds (environment variables, defaults in parentheses): DEVICE_CHECK_TOTAL_S
# (480) for everything; DEVICE_CHECK_TEST_S (170) for the test pass and
# DEVICE_CHECK_TEST_TIMEOUT_S (120) per test (with pytest-timeout); DEVICE_CHECK_BENCH_S (240)
# for the bf16 suite; DEVICE_CHECK_MIXED_MIN_S (90) to start the mixed_bf16 run;
# DEVICE_CHECK_ANCHOR_S (45) for the torch reference. A cap never exceeds what the total leaves
# after the later steps' reserves. Other knobs: DEVICE_CHECK_PLATFORMS (cuda), the JAX_PLATFORMS
# of every step; DEVICE_CHECK_PYTEST_ARGS (-v -rfE -p no:cacheprovider: -v names each
# failure as it happens, so a pass stopped at its cap still says which) and
# DEVICE_CHECK_BENCH_ARGS (--suite full --precision bf16) replace those arguments;
# DEVICE_CHECK_RESULTS (results) is the results root the bench writes under;
# DEVICE_CHECK_WORKERS (8) pytest workers (tests/conftest.py runs them at full fp32 matmul
# precision, not the GPU's TF32 default); DEVICE_CHECK_SKIP (space-separated steps out of:
# tests bench mixed anchor).

set -u -o pipefail

cd "$(dirname "$0")/.."
START=$SECONDS
TOTAL_S=${DEVICE_CHECK_TOTAL_S:-480}
TEST_S=${DEVICE_CHECK_TEST_S:-170}
TEST_TIMEOUT_S=${DEVICE_CHECK_TEST_TIMEOUT_S:-120}
BENCH_S=${DEVICE_CHECK_BENCH_S:-240}
MIXED_MIN_S=${DEVICE_CHECK_MIXED_MIN_S:-90}
ANCHOR_S=${DEVICE_CHECK_ANCHOR_S:-45}
PLATFORMS=${DEVICE_CHECK_PLATFORMS:-cuda}
WORKERS=${DEVICE_CHECK_WORKERS:-8}
PYTEST_ARGS=${DEVICE_CHECK_PYTEST_ARGS:-"-v -rfE -p no:cacheprovider"}
BENCH_ARGS=${DEVICE_CHECK_BENCH_ARGS:-"--suite full --precision bf16"}
SKIP=" ${DEVICE_CHECK_SKIP:-} "
TORCH_ANCHOR=${TORCH_ANCHOR:-../shared/gpu/torch_anchor.py}
RESULTS=${DEVICE_CHECK_RESULTS:-results}
MIXED_OUT=$RESULTS/mixed_bf16
RESERVE_S=10  # packing and the summary
SITE="${TMPDIR:-/tmp}/jaxformer-site"  # where the carried wheels are installed
if [ -n "${OUT:-}" ]; then LOGS=$OUT; else LOGS=$(mktemp -d -t device_check.XXXXXX); fi
mkdir -p "$LOGS"
SUMMARY=()

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export PYTHONDONTWRITEBYTECODE=1

left() { echo $((TOTAL_S - (SECONDS - START))); }
# cap WANTED RESERVE: WANTED, or less so that RESERVE seconds stay for the later steps.
cap() { local c=$(( $(left) - $2 )); [ "$c" -gt "$1" ] && c=$1; echo "$c"; }
skipped() { [[ "$SKIP" == *" $1 "* ]]; }
note() { SUMMARY+=("$(printf '%-8s %-9s %5s s  %s' "$1" "$2" "$3" "$4")"); }
# run_capped NAME SECONDS SIGNAL LOG CMD...: the command under `timeout`, which sends SIGNAL at
# the cap and SIGKILL 20 s later; its output in LOG; sets RC.
run_capped() {
  local name=$1 limit=$2 signal=$3 log=$4; shift 4
  local t0=$SECONDS
  if [ "$limit" -lt 5 ]; then
    RC=124; note "$name" "no time" 0 "$(left) s left of DEVICE_CHECK_TOTAL_S=$TOTAL_S"; return
  fi
  echo "== $name (cap $limit s): $*"
  timeout -s "$signal" -k 20 "$limit" "$@" >"$log" 2>&1
  RC=$?
  local status=ok
  [ $((SECONDS - t0)) -ge "$limit" ] && status="timed out"
  [ "$status" = ok ] && [ "$RC" -ne 0 ] && status="rc=$RC"
  note "$name" "$status" $((SECONDS - t0)) "$log"
  tail -n 15 "$log"
}

# (a) carried wheels -------------------------------------------------------------------------
if compgen -G ".whl/*.whl" >/dev/null; then
  t0=$SECONDS
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
       --target "$SITE" .whl/*.whl >"$LOGS/wheels.log" 2>&1; then
    note wheels ok $((SECONDS - t0)) "$(ls .whl | tr '\n' ' ')"
  else
    note wheels failed $((SECONDS - t0)) "$LOGS/wheels.log"
  fi
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
  note wheels none 0 "no .whl/ folder: beartype must be installed already"
fi

# (b) the test pass ----------------------------------------------------------------------------
TEST_RC=0
if ! skipped tests; then
  timeout_args=()
  if python3 -c "import pytest_timeout" 2>/dev/null; then
    timeout_args=(--timeout="$TEST_TIMEOUT_S")
  fi
  # Preallocation off: jax's default takes 75% of the GPU per process, and 8 workers share it.
  # Matmuls at "highest": the tests hold fp32 maths to CPU tolerances, and jax's GPU default
  # runs fp32 matmuls as TF32 (https://docs.jax.dev/en/latest/_autosummary/jax.default_matmul_precision.html);
  # the bench measures TF32 on purpose, the tests must not.
  # SIGINT at the cap: pytest stops as on Ctrl-C and still prints its summary of failures.
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
  run_capped tests "$(cap "$TEST_S" $((BENCH_S / 2 + ANCHOR_S + RESERVE_S)))" INT \
    "$LOGS/tests.log" \
    env JAX_PLATFORMS="$PLATFORMS" XLA_PYTHON_CLIENT_PREALLOCATE=false \
    JAXFORMER_DEVICE_CHECK=1 python3 -m pytest -n "$WORKERS" $PYTEST_ARGS "${timeout_args[@]}"
  TEST_RC=$RC
fi

# (c) the benchmark suite ------------------------------------------------------------------------
BENCH_RC=0
if ! skipped bench; then
  # shellcheck disable=SC2086
  # The suite rewrites bench.json after every section and model case, so TERM loses little.
  run_capped bench "$(cap "$BENCH_S" $((ANCHOR_S + RESERVE_S)))" TERM "$LOGS/bench.log" \
    env JAX_PLATFORMS="$PLATFORMS" python3 -m benchmarks.suite $BENCH_ARGS --out "$RESULTS"
  BENCH_RC=$RC
fi
if ! skipped mixed; then
  if [ $(( $(left) - ANCHOR_S - RESERVE_S )) -ge "$MIXED_MIN_S" ]; then
    run_capped mixed "$(cap 100000 $((ANCHOR_S + RESERVE_S)))" TERM "$LOGS/bench_mixed.log" \
      env JAX_PLATFORMS="$PLATFORMS" python3 -m benchmarks.suite --suite full --only model \
      --precision mixed_bf16 --no-torch-compile --out "$MIXED_OUT"
    [ "$BENCH_RC" -eq 0 ] && BENCH_RC=$RC
  else
    note mixed skipped 0 "$(left) s left; mixed_bf16 needs DEVICE_CHECK_MIXED_MIN_S=$MIXED_MIN_S + anchor"
  fi
fi

# (d) the torch reference timings ----------------------------------------------------------------
if ! skipped anchor; then
  if [ -f "$TORCH_ANCHOR" ]; then
    run_capped anchor "$(cap "$ANCHOR_S" "$RESERVE_S")" TERM "$LOGS/anchor.log" \
      python3 "$TORCH_ANCHOR"
  else
    note anchor absent 0 "TORCH_ANCHOR=$TORCH_ANCHOR does not exist"
  fi
fi

# (e) pack and summarise -------------------------------------------------------------------------
SLUG=$(JAX_PLATFORMS="$PLATFORMS" XLA_PYTHON_CLIENT_PREALLOCATE=false python3 -c \
  "from benchmarks.harness import device_slug; print(device_slug())" 2>/dev/null || echo unknown)
folders=()
for d in "$RESULTS/$SLUG" "$MIXED_OUT/$SLUG"; do [ -d "$d" ] && folders+=("$d"); done
if [ -n "${OUT:-}" ] && [ ${#folders[@]} -gt 0 ]; then
  tar -czf "$OUT/results.tar.gz" "${folders[@]}" && note pack ok 0 "$OUT/results.tar.gz: ${folders[*]}"
fi

{
  echo
  echo "== jaxformer device check: $(left) s of $TOTAL_S s left; device $SLUG"
  printf '%-8s %-9s %7s  %s\n' step status time detail
  printf '%s\n' "${SUMMARY[@]}"
  if [ -f "$LOGS/tests.log" ]; then
    # xdist -v lines: "[gw3] [ 42%] FAILED tests/...". Counted, in case no final line was printed.
    echo "tests: $(grep -E '^=+ .*(passed|failed|error).* =+$' "$LOGS/tests.log" | tail -n 1)"
    for outcome in PASSED FAILED ERROR SKIPPED; do
      printf '  %-8s %s\n' "$outcome" "$(grep -cE "^\[gw[0-9]+\] \[ *[0-9]+%\] $outcome " "$LOGS/tests.log")"
    done
    grep -E "^\[gw[0-9]+\] \[ *[0-9]+%\] (FAILED|ERROR) " "$LOGS/tests.log" | sed 's/^.*\] /  /' | sort | head -n 60
  fi
  for f in "$RESULTS/$SLUG/bench.json" "$MIXED_OUT/$SLUG/bench.json"; do
    [ -f "$f" ] || continue
    python3 - "$f" <<'EOF'
import json, sys

data = json.load(open(sys.argv[1]))
print(f"\n{sys.argv[1]}: {data['command']} ({'complete' if data.get('complete', True) else 'INCOMPLETE'}, "
      f"{data['total_s']:.0f} s; " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in data["sections"].items()) + ")")
for r in data["sections"].get("model", {}).get("rows", []):
    f = lambda v, spec: "n/a" if v is None else format(v, spec)
    print(f"  {r.get('precision', r.get('dtype')):<10} {r['kind']:<7} B={r['batch']:<3} T={r['seq']:<4} jax {f(r['jax_ms'], '.2f')} ms"
          f" | sdpa {f(r.get('torch_sdpa_ms'), '.2f')} eager {f(r.get('torch_eager_ms'), '.2f')}"
          f" compile {f(r.get('torch_compile_ms'), '.2f')} ms | sdpa/jax {f(r.get('ratio_sdpa'), '.2f')}"
          f" | MFU {f(r['mfu'] and 100 * r['mfu'], '.1f')}% | temp {f(r.get('jax_temp_mib'), ',.0f')}"
          f" torch peak {f(r.get('torch_peak_mib'), ',.0f')} MiB | {r.get('attention')}")
for g in data["goals"]:
    print(f"  {'met ' if g['met'] else 'MISS'} {g['goal']}: {g['case']}: {g['measured']} (target {g['target']})")
EOF
  done
  if [ -f "$LOGS/anchor.log" ]; then echo; grep '^torch ' "$LOGS/anchor.log"; fi
} | tee "$LOGS/summary.txt"

[ "$TEST_RC" -ne 0 ] && exit "$TEST_RC"
exit "$BENCH_RC"

#!/usr/bin/env bash
# W1 (100 sequential steps) and W2 (1,000-item fan-out + join) side by side on this project,
# Celery 5 + Redis (prefork 2, with and without acks_late) and DBOS (on an embedded PostgreSQL),
# in one run, printed as one table with the ratios to the fastest peer.
#
# This calls the shared yardstick (run.sh of the session's shared/bench folder) rather than
# copying it: it builds each peer's virtualenv once under $BENCH_WORK, starts its own Redis,
# PostgreSQL, NATS, server and workers, and stops only what it started. Optional: not part of
# the test suite or .ci/run.
#
#   benchmarks/peers/run.sh                 # from the project root, .venv installed
#   NOETL_YARDSTICK=/path/to/bench benchmarks/peers/run.sh
#   PEERS_IN_PROCESS=1 benchmarks/peers/run.sh   # also a row for `isolated: false`
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
yard=${NOETL_YARDSTICK:-}
if [[ -z $yard ]]; then
  for cand in "$root/../shared/bench" "$root/../../shared/bench" /work/shared/bench; do
    [[ -x $cand/run.sh ]] && { yard=$(cd "$cand" && pwd); break; }
  done
fi
[[ -n $yard && -x $yard/run.sh ]] || { echo "no yardstick: set NOETL_YARDSTICK to the folder of run.sh"; exit 2; }
command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server"; exit 2; }
# The yardstick's Celery half starts Redis on 127.0.0.1:6390: refuse early if it is taken.
if (exec 3<>/dev/tcp/127.0.0.1/6390) 2>/dev/null; then
  echo "127.0.0.1:6390 is in use: the yardstick's Redis needs it"; exit 2
fi
export BENCH_WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/noetl-peers}
export PY=${PY:-$root/.venv/bin/python}
export PATH=$(dirname "$PY"):$PATH  # `noetl` of this checkout, for the isolated: false row
echo "machine: $(nproc) CPUs, $(uname -sr); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cd "$root" && "$yard/run.sh"
rc=$?
if [[ ${PEERS_IN_PROCESS:-0} == 1 ]]; then
  echo "this project, isolated: false ..."
  (cd "$BENCH_WORK" && timeout 900 "$PY" ours.py --in-process) >"$BENCH_WORK/out/ours-in-process.json" 2>/dev/null
  "$PY" - "$BENCH_WORK/out/ours-in-process.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
w1, w2 = r["W1"]["units_per_s"], r["W2"]["units_per_s"]
print(f"{'this project':<14}{'isolated: false':<28}{w1:>12.0f}{w2:>12.0f}")
PY
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $rc

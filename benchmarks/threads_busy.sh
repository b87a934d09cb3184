#!/usr/bin/env bash
# Threads on a busy machine (BENCHMARKS.md): the seed preset, 1 epoch, samples/s of its log line, idle
# and with one core kept busy; "before" is a frozen copy of a commit (default 738db3a), "after" the work
# tree. Run from the repository root: bash benchmarks/threads_busy.sh [COMMIT]
set -u
cd "$(dirname "$0")/.."
BEFORE=/tmp/before-${1:-738db3a}
[ -d "$BEFORE" ] || { mkdir -p "$BEFORE" && git archive "${1:-738db3a}" | tar -x -C "$BEFORE"; }
t() { # $1 = src path, rest = args
  local src=$1; shift
  PYTHONPATH=$src .venv/bin/python -m vaelab train --preset seed --epochs 1 --out /tmp/tb --overwrite --no-plots "$@" 2>&1 | grep -oE "[0-9]+ samples/s" | tail -1
}
for load in idle busy; do
  B=""
  if [ $load = busy ]; then python3 -c "while True: pass" & B=$!; sleep 1; fi
  for rep in 1 2 3; do
    echo "$load before-2threads $(t $BEFORE/src --threads 2) | after-2threads $(t $PWD/src --threads 2) | after-1thread $(t $PWD/src --threads 1)"
  done
  [ -n "$B" ] && kill $B
done

#!/usr/bin/env bash
# Times this tree's sparse CPU loops against those of an older revision, in several builds:
#   bash tools/ab_cpu_loops.sh REV [RUNS_PER_BUILD]
# Both versions of kernels/ go into one binary (tools/ab_cpu_loops.cc; the old one under
# namespace tf_ftrl_old), timed in interleaved, shuffled rounds. Each of seven builds places
# the code otherwise (-falign-functions / -falign-loops): on the Zen 5 VM a loop's placement
# alone moved its time by up to 13%, so one build's ratio says little. Prints every run's
# new / old per case, then each case's range over all runs. Needs g++ (C++17); no TensorFlow.
set -euo pipefail
REV=${1:?usage: tools/ab_cpu_loops.sh REV [RUNS_PER_BUILD]}
RUNS=${2:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CXX=${CXX:-g++}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/kernels_old"
for header in $(git -C "$ROOT" ls-tree --name-only "$REV" kernels/ | grep '\.h$'); do
  git -C "$ROOT" show "$REV:$header" |
    sed 's#"kernels/#"kernels_old/#g; s/namespace tf_ftrl\b/namespace tf_ftrl_old/g; s/tf_ftrl::/tf_ftrl_old::/g' \
    > "$WORK/kernels_old/$(basename "$header")"
done

# The op library's flags (.bazelrc), with other alignments.
FLAGS="-std=c++17 -O3 -ffp-contract=off -fno-math-errno -fno-trapping-math"
ALIGNMENTS=("" "-falign-functions=64 -falign-loops=64" "-falign-functions=32" "-falign-loops=16"
            "-falign-functions=128 -falign-loops=32" "-falign-jumps=64" "-falign-functions=256")
for b in "${!ALIGNMENTS[@]}"; do
  # shellcheck disable=SC2086  # the flags are words
  "$CXX" $FLAGS ${ALIGNMENTS[$b]} -I"$ROOT" -I"$WORK" -o "$WORK/ab_$b" \
    "$ROOT/tools/ab_cpu_loops.cc" -lpthread &
  if (( b % 2 == 1 )); then wait; fi
done
wait

for run in $(seq 1 "$RUNS"); do
  for b in "${!ALIGNMENTS[@]}"; do
    echo "== build $b (${ALIGNMENTS[$b]:-default alignment}), run $run"
    "$WORK/ab_$b" 120 "$run" | tee -a "$WORK/all.txt"
  done
done
echo "== new / old over all runs (min-max, median):"
grep "new/old" "$WORK/all.txt" | awk '{name = $0; sub(/ +old .*/, "", name);
  r[name] = r[name] " " $NF}
  END {for (k in r) print k ":" r[k]}' | sort | while IFS=: read -r name values; do
  python3 -c "import sys, statistics as s; v = sorted(map(float, sys.argv[2].split()));
print(f'{sys.argv[1]:<26} {v[0]:.3f}-{v[-1]:.3f}, median {s.median(v):.3f}')" "$name" "$values"
done

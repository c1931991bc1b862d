#!/bin/bash
# Resume the fusion study (issue 11) one run at a time, committing each result as it finishes.
#
# Every run uses the recipe frozen at commit 037087d, from a git worktree of that commit (so
# library changes on main cannot change the study under it); results go to docs/fusion-runs/
# of this checkout and are committed there. Finished runs are skipped (their file exists), so
# the script can be stopped at any time and started again. While /tmp/fusion-pause exists it
# waits before the next run (benchmarks and CI need an idle machine).
#
#   nohup bash scripts/fusion_resume.sh > /tmp/fusion-resume.log 2>&1 &
#   python scripts/compare_fusion.py --report-only     # then docs/fusion.md from the files
set -u
FROZEN=037087d
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TREE=${FUSION_WORKTREE:-/tmp/geofuse-fusion-$FROZEN}
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -d "$TREE" ] || git -C "$ROOT" worktree add -f --detach "$TREE" $FROZEN
# the base modes: seeds outer, then the gated variant
jobs=()
for seed in 0 1 2; do
  for set in spacenet dubai; do
    for mode in none concat weighted attention cross_attention weighted-gates; do
      jobs+=("$set $mode $seed --no-match-params")
    done
  done
done
# the twins mode by mode, the closest contender (weighted-matched) first, so that a study cut
# short still settles the question that matters most
for mode in weighted-matched attention-matched cross_attention-matched weighted-gates-matched; do
  for seed in 0 1 2; do
    for set in spacenet dubai; do
      jobs+=("$set $mode $seed")
    done
  done
done
for job in "${jobs[@]}"; do
  read -r set mode seed flag <<< "$job"
  [ -e "$ROOT/docs/fusion-runs/$set-$mode-seed$seed.json" ] && continue
  while [ -e /tmp/fusion-pause ]; do sleep 5; done
  echo "=== $(date +%T) $set $mode seed $seed"
  (cd "$TREE" && PYTHONPATH="$TREE" "$PY" scripts/compare_fusion.py --sets "$set" \
     --modes "$mode" --seeds "$seed" ${flag:-} --budget 5m --work /tmp/fusion-work \
     --runs "$ROOT/docs/fusion-runs" --out /tmp/fusion-frozen-report.md) || continue
  [ -e "$ROOT/docs/fusion-runs/$set-$mode-seed$seed.json" ] || continue
  for _ in 1 2 3 4 5; do
    git -C "$ROOT" add docs/fusion-runs && git -C "$ROOT" commit -q \
      -m "fusion study: $set $mode seed $seed (5 min)" -- docs/fusion-runs && break
    sleep 3
  done
done
echo "=== $(date +%T) the study is complete"

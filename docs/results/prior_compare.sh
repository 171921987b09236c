#!/usr/bin/env bash
# RED-diff with the shipped prior (v1) against candidate weights (NEW, e.g. a fine-tune of
# configs/train_prior_cpu.yaml), on the RESULTS test split: the five tasks, the same images, masks and noise
# draws, with RED-diff's tuned fragment (configs/ablations/tuned/<task>/solver/red_diff.yaml) and the classical
# solver's tuned row alongside (it uses no prior). docs/PRIOR_CORPUS.md reports what it gave.
#   NEW=runs/train_prior_cpu/embedded64.safetensors bash docs/results/prior_compare.sh [TASK ...]
# JOBS=2 (default) runs two tasks at once, one torch thread each. Other stages (STAGE=...):
#   tune      RED-diff's grid of RESULTS (lr x lambda, 100 iterates) on the tuning split with NEW; the best row
#             per task written to $OUT/tuned/<task>/red_diff.yaml
#   test_new  those fragments on the test split with NEW, the classical solver's tuned row alongside
#   iterates  NEW at 100, 200 and 500 iterates on the test split (the tune stage's fragments)
#   blend     weight-space blends of the shipped prior and NEW, (1 - w) v1 + w NEW for w in WEIGHTS (default
#             0.25 0.5 0.75 1), written to $OUT/blend/w<w>.safetensors, each with RED-diff's tuned fragment on
#             the tuning split next to the shipped prior: choose w there, then run the table stage on the test
#             split with NEW=$OUT/blend/w<w>.safetensors
set -euo pipefail
cd "$(dirname "$0")/../.."
C=${C:-"python -m lightning_redd.experiments"}
OUT=${OUT:-outputs/prior_compare}
NEW=${NEW:?set NEW=<candidate .safetensors>}
JOBS=${JOBS:-2}
TASKS=${*:-inpainting_strokes inpainting_box sr_block4 deblur_gaussian hdr}
[[ -f $NEW ]] || { echo "NEW=$NEW: no such file" >&2; exit 2; }
[[ -d outputs/heldout/test ]] || python -m lightning_redd.data.photos export-split outputs/heldout/test --split test >/dev/null
[[ -d outputs/heldout/tuning ]] || python -m lightning_redd.data.photos export-split outputs/heldout/tuning --split tuning >/dev/null
P=model.prior.init_args.checkpoint
S=model.solver.init_args
mkdir -p "$OUT"

one() {  # one TASK
  local task=$1 tuned=configs/ablations/tuned/$1/solver new=$OUT/tuned/$1
  local common=(--config configs/demo.yaml --set model.prior.init_args.cpu_bf16=off --threads 1 --resume --config "configs/ablations/task/$task.yaml")
  case ${STAGE:-table} in
  tune)
    $C table --out "$OUT/tune/$task" "${common[@]}" --set data.root=outputs/heldout/tuning --set data.batch_size=4 \
      --isolate none --emit-best "$new" --title "Tuning grid, NEW prior: $task (tuning split)" \
      --solver red_diff=configs/solver/red_diff.yaml --set red_diff:$S.num_steps=100 --set "red_diff:$P=$NEW" \
      --grid red_diff:$S.lr=0.25,0.5 --grid red_diff:$S.lam=0.01,0.02,0.05,0.25,1.0 ;;
  test_new)
    $C table --out "$OUT/test_new/$task" "${common[@]}" --set data.root=outputs/heldout/test --set data.batch_size=5 \
      --solver red_diff_new="$new/red_diff.yaml" --set "red_diff_new:$P=$NEW" --solver classical="$tuned/classical.yaml" \
      --figure-names chelsea coffee motorcycle coffee_test00 motorcycle_left_test01 \
      --title "Test split: $task, RED-diff tuned for the NEW prior" ;;
  iterates)
    $C iterates --out "$OUT/iterates/$task" "${common[@]}" --set data.root=outputs/heldout/test --set data.batch_size=5 \
      --solver red_diff="$new/red_diff.yaml" --set "red_diff:$P=$NEW" --steps 100 200 500 \
      --title "RED-diff, NEW prior: PSNR vs iterates ($task, test split)" ;;
  table)
    $C table --out "$OUT/$task" "${common[@]}" --set data.root=outputs/heldout/test --set data.batch_size=5 \
      --solver red_diff="$tuned/red_diff.yaml" \
      --solver red_diff_new="$tuned/red_diff.yaml" --set "red_diff_new:$P=$NEW" \
      --solver classical="$tuned/classical.yaml" \
      --title "Test split: $task, RED-diff with the shipped prior and NEW" ;;
  blend)
    local blends=()
    for w in ${WEIGHTS:-0.25 0.5 0.75 1}; do
      blends+=(--solver "w${w//./}=$tuned/red_diff.yaml" --set "w${w//./}:$P=$OUT/blend/w$w.safetensors")
    done
    $C table --out "$OUT/blend/$task" "${common[@]}" --set data.root=outputs/heldout/tuning --set data.batch_size=4 \
      --isolate none --solver red_diff="$tuned/red_diff.yaml" "${blends[@]}" \
      --title "Tuning split: $task, RED-diff with the shipped prior and blends (1 - w) shipped + w NEW" ;;
  *) echo "unknown STAGE=$STAGE (table, tune, test_new, iterates, blend)" >&2; return 2 ;;
  esac
}

if [[ ${STAGE:-table} == blend ]]; then
  for w in ${WEIGHTS:-0.25 0.5 0.75 1}; do
    python -m lightning_redd.lit.train_prior blend lightning_redd/priors/weights/embedded64.safetensors "$NEW" \
      --weight "$w" --out "$OUT/blend/w$w.safetensors" >/dev/null
  done
fi
running=0
for task in $TASKS; do
  one "$task" > "$OUT/$task.${STAGE:-table}.log" 2>&1 &
  running=$((running + 1))
  if (( running >= JOBS )); then wait -n; running=$((running - 1)); fi
done
wait
for task in $TASKS; do grep '^|' "$OUT/$task.${STAGE:-table}.log" || tail -n 5 "$OUT/$task.${STAGE:-table}.log"; done

#!/usr/bin/env bash
# Reproduces every table and figure of docs/RESULTS.md, sequentially, on the CPU (1 thread per run: on a shared 2-core machine 2 threads ran 6x slower).
# Re-running resumes: runs whose arguments and config contents are unchanged are reused (--resume).
#   bash docs/results/reproduce.sh            # everything, in this order
#   bash docs/results/reproduce.sh tune_cheap # one stage: tune_cheap test_cheap tune_guided test ablations iterates presets publish
set -euo pipefail
cd "$(dirname "$0")/../.."
C=${C:-"python -m lightning_redd.experiments"}
OUT=${OUT:-outputs/results}
TASKS=${TASKS:-"inpainting_strokes inpainting_box sr_block4 deblur_gaussian hdr"}  # TASKS=... runs a subset (e.g. two shells, disjoint tasks)
S=model.solver.init_args
# float32 on every CPU (the demo config runs bf16 on CPUs with bf16 instructions): the tables were measured in float32
COMMON=(--config configs/demo.yaml --set model.prior.init_args.cpu_bf16=off --threads 1 --resume)

splits() {
  python -m lightning_redd.data.photos export-split outputs/heldout/test --split test >/dev/null
  python -m lightning_redd.data.photos export-split outputs/heldout/tuning --split tuning >/dev/null
}

# The tuning grids (on the tuning split, 4 crops); each solver's step budget is fixed, the grid on top.
CHEAP=(--solver red_diff=configs/solver/red_diff.yaml --set red_diff:$S.num_steps=100
       --grid red_diff:$S.lr=0.25,0.5 --grid red_diff:$S.lam=0.01,0.02,0.05,0.25,1.0
       --solver ddrm=configs/solver/ddrm.yaml --grid ddrm:$S.eta=0.2,0.5,0.85,1.0
       --solver classical=configs/solver/classical.yaml --grid classical:$S.regulariser=tv,laplace
       --grid classical:$S.lam=0.001,0.003,0.01,0.03,0.1)
GUIDED=(--solver pigdm=configs/solver/pigdm.yaml --set pigdm:$S.num_steps=50 --grid pigdm:$S.eta=0.0,1.0
        --solver dps=configs/solver/dps.yaml --set dps:$S.num_steps=100 --grid dps:$S.zeta=0.3,1.0,3.0,10.0)

tune() {  # tune TASK SOLVER-ARGS...
  local task=$1; shift
  local args=("$@")
  if [[ $task == hdr ]]; then  # drop DDRM (and its grid) for the nonlinear task
    local kept=() i=0
    while [[ $i -lt ${#args[@]} ]]; do
      if [[ ${args[$i]} == --solver && ${args[$((i+1))]} == ddrm=* ]] || [[ ${args[$i]} == --grid && ${args[$((i+1))]} == ddrm:* ]]; then
        i=$((i+2)); continue; fi
      kept+=("${args[$i]}"); i=$((i+1))
    done
    args=("${kept[@]}")
  fi
  $C table --out "$OUT/tune/$task" "${COMMON[@]}" --config "configs/ablations/task/$task.yaml" \
    --set data.root=outputs/heldout/tuning --set data.batch_size=4 --isolate none \
    --emit-best "configs/ablations/tuned/$task/solver" --title "Tuning grid: $task (tuning split)" "${args[@]}"
}

test_task() {  # test_task TASK LABEL...: the tuned fragments of these solvers on the test split
  local task=$1; shift
  local solvers=()
  for s in "$@"; do
    local f="configs/ablations/tuned/$task/solver/$s.yaml"
    [[ -f $f ]] && solvers+=(--solver "$s=$f")
  done
  $C table --out "$OUT/test/$task" "${COMMON[@]}" --config "configs/ablations/task/$task.yaml" \
    --set data.root=outputs/heldout/test --set data.batch_size=5 --title "Test split: $task" \
    --figure-names chelsea coffee motorcycle coffee_test00 motorcycle_left_test01 "${solvers[@]}"
}

tune_cheap()  { for task in $TASKS; do tune "$task" "${CHEAP[@]}"; done; }
test_cheap()  { for task in $TASKS; do test_task "$task" red_diff ddrm classical; done; }
tune_guided() { for task in $TASKS; do tune "$task" "${CHEAP[@]}" "${GUIDED[@]}"; done; }
test()        { for task in $TASKS; do test_task "$task" red_diff dps pigdm ddrm classical; done; }

ablations() {  # RED-diff's weightings (each at 3 lambdas) and time orders on the 4 demo images, strokes task, tuned lr (and lambda for the orders)
  local tuned=configs/ablations/tuned/inpainting_strokes/solver/red_diff.yaml
  $C table --out "$OUT/ablations/weighting" "${COMMON[@]}" --config "$tuned" --set data.batch_size=4 \
    --solvers 'configs/ablations/solver/weighting_*.yaml' --title "RED-diff time weighting (demo images, strokes)"
  # the weightings' scales differ by orders of magnitude: each also at lambda 0.1 and 1.0 (the above: the tuned 0.01)
  $C table --out "$OUT/ablations/weighting_lam" "${COMMON[@]}" --config "$tuned" --set data.batch_size=4 \
    --solvers 'configs/ablations/solver/weighting_*.yaml' --grid model.solver.init_args.lam=0.1,1.0 \
    --title "RED-diff time weighting at lambda 0.1 and 1.0 (demo images, strokes)"
  $C table --out "$OUT/ablations/order" "${COMMON[@]}" --config "$tuned" --set data.batch_size=4 \
    --solvers 'configs/ablations/solver/order_*.yaml' --title "RED-diff time order (demo images, strokes)"
}

iterates() {  # ITERATES='25 50 100 200 500 1000' for the full curve (1000 was left out on the 2-core CPU: ~5 min more)
  $C iterates --out "$OUT/iterates" "${COMMON[@]}" --set data.batch_size=4 \
    --solver red_diff=configs/ablations/tuned/inpainting_strokes/solver/red_diff.yaml \
    --steps ${ITERATES:-25 50 100 200 500} --title "RED-diff: PSNR versus iterates (demo images, strokes)"
}

presets() {  # the 64 px presets configs/task/*.yaml: RED-diff's lambda grid on the tuning split for the tasks not tuned above
  python docs/results/make_presets.py --tune
}

publish() {  # docs/RESULTS.md (prose: docs/results/results_text.md) with its tables, CSVs and figures under docs/results/
  python docs/results/make_results.py "$OUT"
}

splits
if [[ $# -gt 0 ]]; then for stage in "$@"; do "$stage"; done; exit 0; fi
tune_cheap; test_cheap; tune_guided; test; ablations; iterates; presets; publish

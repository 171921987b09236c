#!/usr/bin/env bash
# Train the embedded 64 px prior from scratch on the photo corpus, in one run on the GPU machine: the
# first prior's recipe (configs/train_prior.yaml: 3876 steps at batch 256, 7 minutes on one H100) on the
# corpus's photographs, half the patches from the first prior's 16 scikit-image photos (data.replay), with an
# 8-minute limit that still exports. Prepare here, where the registries are reachable:
#     python -m lightning_redd.data.corpus build outputs/corpus     # docs/PRIOR_CORPUS.md: the apt packages
#     bash benchmarks/gpu_wheels.sh                                 # .whl/: jsonargparse and what it needs
# then run on the GPU machine (the device tool: carry [".whl", "outputs/corpus"]):
#     bash benchmarks/gpu_train_prior.sh [lightning-redd-train fit options...]
# It writes $OUT (default runs/train_prior_corpus): embedded64.safetensors (EMA weights + metadata),
# samples.png, logs. Back here, compare it with the shipped weights:
#     NEW=<that file> bash docs/results/prior_compare.sh
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
corpus="${CORPUS:-outputs/corpus/images}"
[[ -d "$corpus" ]] || { echo "CORPUS=$corpus: no such folder; build it with python -m lightning_redd.data.corpus build outputs/corpus" >&2; exit 2; }
exec python3 -m lightning_redd.lit.train_cli fit --config configs/train_prior.yaml \
    --data.folder "$corpus" --data.replay 0.5 \
    --data.val_names "[opencv-doc__home, libjxl-testdata__u76c0g_bliznaca_srgb8]" \
    --trainer.default_root_dir "${OUT:-runs/train_prior_corpus}" --trainer.max_time 00:00:08:00 "$@"

#!/usr/bin/env bash
# One node, 8 ranks: LongLoRA's 7B recipe (LoRA+, S2-Attn, 8k context) with ZeRO-2.
# Usage: [DEVICE=cuda] scripts/launch/single_node.sh MODEL_DIR TOKENS.bin OUT_DIR [extra build/train flags]
# DEVICE=cuda: one GPU per rank (rank r takes GPU r of the node; NCCL between them) — start as many ranks as GPUs
# (NP, default 8). The GPU path has never run yet (docs/scaling.md).
set -euo pipefail
model=$1 data=$2 out=$3; shift 3
# One OpenMP thread per core of a rank's share; bind ranks to cores so they do not migrate.
np=${NP:-8}
[[ $np =~ ^[1-9][0-9]*$ ]] || { echo "single_node.sh: NP must be a positive integer (ranks), got '$np'" >&2; exit 2; }
threads=$(( $(nproc) / np ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}
# NCCL_DEBUG=WARN prints NCCL's problems; INFO shows the transports it picked (NVLink/P2P, SHM, IB, sockets).
exec mpirun -np "$np" --bind-to core --map-by slot:PE=${OMP_NUM_THREADS} \
  -x OMP_NUM_THREADS -x NCCL_DEBUG=${NCCL_DEBUG:-WARN} \
  build/train --model_name_or_path "$model" --data_path "$data" --output_dir "$out" \
  --model_max_length 8192 --use_s2attn true --low_rank_training true --trainable_params embed,norm \
  --learning_rate 2e-5 --weight_decay 0 --warmup_steps 20 --lr_scheduler_type constant_with_warmup \
  --per_device_train_batch_size 1 --gradient_accumulation_steps 8 --max_steps 1000 --save_steps 100 \
  --zero_stage 2 --device "${DEVICE:-cpu}" "$@"

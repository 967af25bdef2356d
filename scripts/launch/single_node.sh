#!/usr/bin/env bash
# One node, 8 ranks: LongLoRA's 7B recipe (LoRA+, S2-Attn, 8k context) with ZeRO-2.
# Usage: scripts/launch/single_node.sh MODEL_DIR TOKENS.bin OUT_DIR [extra build/train flags]
set -euo pipefail
model=$1 data=$2 out=$3; shift 3
# One OpenMP thread per core of a rank's share; bind ranks to cores so they do not migrate.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / 8 ))}
exec mpirun -np 8 --bind-to core --map-by slot:PE=${OMP_NUM_THREADS} \
  -x OMP_NUM_THREADS -x NCCL_DEBUG=WARN \
  build/train --model_name_or_path "$model" --data_path "$data" --output_dir "$out" \
  --model_max_length 8192 --use_s2attn true --low_rank_training true --trainable_params embed,norm \
  --learning_rate 2e-5 --weight_decay 0 --warmup_steps 20 --lr_scheduler_type constant_with_warmup \
  --per_device_train_batch_size 1 --gradient_accumulation_steps 8 --max_steps 1000 --save_steps 100 \
  --zero_stage 2 "$@"

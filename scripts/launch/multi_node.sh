#!/usr/bin/env bash
# Several nodes with Open MPI: 8 ranks on each host of HOSTS (e.g. "node1:8,node2:8").
# Usage: HOSTS=node1:8,node2:8 [DEVICE=cuda] scripts/launch/multi_node.sh MODEL_DIR TOKENS.bin OUT_DIR [extra flags]
# DEVICE=cuda: one GPU per rank (rank r of a node takes its GPU r; give each host as many slots as GPUs).
# The repository, model, data and OUT_DIR must be at the same paths on every host (a shared filesystem):
# checkpoints are written by several ranks into one directory.
set -euo pipefail
model=$1 data=$2 out=$3; shift 3
: "${HOSTS:?set HOSTS, e.g. node1:8,node2:8}"
ranks=$(echo "$HOSTS" | tr ',' '\n' | awk -F: '{s += $2} END {print s}')
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
# btl_tcp_if_include / NCCL_SOCKET_IFNAME: the interface the nodes reach each other on (not docker0 or lo);
# NCCL_IB_HCA selects InfiniBand adapters when present; NCCL_DEBUG=INFO shows the transports NCCL chose.
exec mpirun -np "$ranks" -H "$HOSTS" --bind-to core --map-by slot:PE=${OMP_NUM_THREADS} \
  --mca btl_tcp_if_include "${IFACE:-eth0}" -x NCCL_SOCKET_IFNAME="${IFACE:-eth0}" -x NCCL_IB_HCA \
  -x OMP_NUM_THREADS -x LONGLORA_COMM_TIMEOUT_SEC -x NCCL_DEBUG=${NCCL_DEBUG:-WARN} \
  build/train --model_name_or_path "$model" --data_path "$data" --output_dir "$out" \
  --model_max_length 8192 --per_device_train_batch_size 1 --gradient_accumulation_steps 8 \
  --zero_stage 2 --device "${DEVICE:-cpu}" --resume_from_checkpoint auto "$@"

#!/usr/bin/env bash
# The one device check: builds the CUDA backend and its parity program,
# compares every op it implements with the CPU backend, prints a table.
# Run on a machine with an NVIDIA GPU (through the device tool).
set -euo pipefail
cd "$(dirname "$0")/../.."
make -s CUDA=1 cuda-check build/aha-engine >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
cc -std=c11 -D_GNU_SOURCE -O2 -fopenmp -I. -Ikernels -Iengine tests/gpu/parity.c \
  $(ls build/obj/kernels/cpu/*.o) build/obj/kernels/cuda/*.o -o build/gpu-parity \
  -ldnnl -lm -fopenmp -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas -lstdc++
./build/gpu-parity

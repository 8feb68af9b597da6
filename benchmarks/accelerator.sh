#!/usr/bin/env bash
# One accelerator session's figures, in under 8 minutes on one GPU: each benchmark prints
# one JSON line on stdout (progress on stderr).
#   - throughput: the MLP, the digits CNN, the ResNet and the charlm Transformer (bfloat16
#     on an accelerator, with its MFU from XLA's cost analysis and the device's peak);
#   - the seed workload (jaxdl fit against hand-written loops);
#   - populations (the 64-member sweep, and the 8-member CNN sweep against single fits).
# Run from the repository root:  bash benchmarks/accelerator.sh [PYTHON]
# Each benchmark has its own time limit, so one that hangs does not take the others' time.
set -u
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
export JAXDL_CACHE_DIR="${JAXDL_CACHE_DIR:-$(mktemp -d)}"
status=0
run() {  # limit_seconds, then the command
    limit=$1
    shift
    timeout "$limit" "$python" "$@" || { echo "{\"benchmark\": \"$*\", \"error\": $?}"; status=1; }
}
run 240 benchmarks/throughput.py --models mlp,cnn,resnet,transformer --repeats 3
run 90 benchmarks/seed_workload.py --epochs 100 --repeats 3
run 150 benchmarks/population.py --members 64 --epochs 30 --sequential 8 --repeats 3
exit $status

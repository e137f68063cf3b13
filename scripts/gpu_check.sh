#!/usr/bin/env bash
# The GPU checks (scripts/gpu_check.py): trainer=gpu against the CPU, GITS and oss on the GPU, bf16/fp16 U-Net
# sampling against fp32, Inception-v3 features on the GPU against the CPU, a 1-GPU DDP (nccl) run against the plain
# one. A few minutes on one GPU; prints one table (and writes gpu_check.md / .json to $OUT when it is set).
#
#   scripts/gpu_check.sh             on a GPU machine with fewstep installed (make install, CUDA torch)
#   scripts/gpu_check.sh --prepare   here, before sending the tree to a bare GPU machine that cannot download:
#                                    puts into .gpu_carry/ (git-ignored) the wheels its image lacks and an fp16 copy
#                                    of the Inception weights (default_1.pt is 87 MB, over what travels); then, there,
#                                    scripts/gpu_check.sh installs the wheels into /tmp/site and uses that copy.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu_carry
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$CARRY/whl"   # git-ignored (.gitignore): the device tool takes it with carry=[".gpu_carry"]
    # pure-Python packages the GPU image lacks (its torch, lightning, torchmetrics, sklearn, matplotlib are used)
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        -d "$CARRY/whl" hydra-core==1.3.8 omegaconf==2.3.1 mlxtend==0.25.0
    "$PY" -m pip wheel -q --no-deps -w "$CARRY/whl" antlr4-python3-runtime==4.9.3   # published as sdist only
    "$PY" - "$CARRY/inception_fp16.pt" <<'EOF'
import sys, torch
from fewstep.metrics.inception import default_weights
net = torch.jit.load(str(default_weights()), map_location="cpu").half()
torch.jit.save(net, sys.argv[1])
EOF
    du -sh "$CARRY"
    exit 0
fi

if [ -d "$CARRY/whl" ] && ! "$PY" -c "import hydra, mlxtend" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import fewstep" 2>/dev/null; then
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
INCEPTION=()
if ! "$PY" -c "from fewstep.metrics.inception import default_weights as d; assert d()" 2>/dev/null \
        && [ -f "$CARRY/inception_fp16.pt" ]; then
    INCEPTION=(--inception "$CARRY/inception_fp16.pt")
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
exec "$PY" scripts/gpu_check.py "${INCEPTION[@]}" "$@"

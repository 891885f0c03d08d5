#!/usr/bin/env bash
# The TensorRT engine path end to end, on a machine with an NVIDIA GPU, in a few minutes:
#   build (trt-fp16 and trt-int8) -> engine inside the build -> `edgec engine` rebuild from the spec (timing
#   cache reused; the engine's parity gates it) -> `edgec parity` on the engine -> ./build_engine.sh with trtexec,
#   where trtexec exists. Engines are strongly typed (TensorRT 10 and 11).
# Usage: scripts/gpu_check.sh [MODEL_DIR] [WORK_DIR]. Without MODEL_DIR it makes a small random BERT
# (4 layers x 256, no download). Prints what ran and what it saw; exits non-zero if a step that should
# work failed. Without tensorrt it checks the deferred path instead and says so.
# Run it where edgec is installed (pip install -e '.[trt]'); EDGEC overrides the command it calls.
set -uo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EDGEC=${EDGEC:-$(command -v edgec || echo "python3 -m edgec")}
WORK=${2:-$(mktemp -d /tmp/edgec-gpu-check.XXXXXX)}
mkdir -p "$WORK"
failures=0
step() { echo; echo "== $*"; }
expect() {  # expect CODE PATTERN COMMAND...: run it, show its output, count a failure unless the exit code
    local want=$1 pattern=$2; shift 2  # is CODE and the output matches PATTERN (an extended regex; "" for any)
    local output got
    output=$("$@" 2>&1); got=$?
    echo "$output"
    if [ "$got" -eq "$want" ] && grep -Eq -- "${pattern:-.}" <<<"$output"; then
        echo "-- ok (exit $got): $*"
    else
        echo "-- FAILED (exit $got, expected $want${pattern:+ and output matching '$pattern'}): $*"; failures=$((failures + 1))
    fi
}

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not available"
python3 - <<'PY'
import importlib.util, platform
import torch
from edgec.backends.tensorrt_engine import engine_unavailable_reason
print("python", platform.python_version(), "| torch", torch.__version__, "| torch sees CUDA:", torch.cuda.is_available())
if importlib.util.find_spec("tensorrt"):
    import tensorrt
    print("tensorrt", tensorrt.__version__)
else:
    print("tensorrt: not installed")
print("engine can be built here:", engine_unavailable_reason() or "yes")
PY
CAN_BUILD=$(python3 -c "from edgec.backends.tensorrt_engine import engine_unavailable_reason as r; print('no' if r() else 'yes')")

step "data and model in $WORK"
python3 - "$WORK" "${1:-}" <<'PY'
import json, sys
from pathlib import Path
work, model = Path(sys.argv[1]), sys.argv[2]
words = "the a movie film was good bad great terrible food service slow fast phone battery we love hate this it".split()
texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(4 + i % 9)) for i in range(200)]
(work / "calib.txt").write_text("\n".join(texts) + "\n")
with open(work / "eval.jsonl", "w") as f:
    for i in range(100):
        f.write(json.dumps({"text": texts[i], "text_pair": texts[(i * 13 + 5) % 200], "score": float(i % 5)}) + "\n")
if not model:
    from transformers import BertConfig, BertModel, BertTokenizerFast
    import torch
    folder = work / "model"
    folder.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), model_max_length=128).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    BertModel(config).save_pretrained(folder)
    print("made", folder)
PY
[ $? -eq 0 ] || { echo "could not write the data or the model"; exit 1; }
MODEL=${1:-$WORK/model}

for target in trt-fp16 trt-int8; do
    step "edgec build $MODEL --target $target"
    expect 0 "parity ledger" $EDGEC build "$MODEL" --target $target --calib "$WORK/calib.txt" --eval "$WORK/eval.jsonl" --max-batch 8 --out "$WORK/$target"
    python3 -c "import sys; from pathlib import Path; from edgec.artifacts.manifest import Manifest; m=Manifest.read(Path(sys.argv[1])); final=m.parity.ledger[-1]; print('engine:', m.engine['status'], '| final ledger row:', final.stage, 'simulated' if final.simulated else 'on the engine')" "$WORK/$target"
done

if [ "$CAN_BUILD" = yes ]; then
    step "edgec engine (rebuild from trt_build.json; the timing cache from the build is reused; parity gates it)"
    expect 0 "TensorRT engine for" $EDGEC engine "$WORK/trt-int8" --data "$WORK/eval.jsonl"
    step "edgec parity on the engine, real eval data"
    expect 0 '"simulated": false' $EDGEC parity "$WORK/trt-int8" --data "$WORK/eval.jsonl" --json
    if command -v trtexec >/dev/null; then
        step "./build_engine.sh (trtexec, the same spec)"
        expect 0 "" "$WORK/trt-int8/build_engine.sh"
    else
        echo "trtexec not on PATH: build_engine.sh not run"
    fi
else
    step "no engine can be built here: the deferred path"
    expect 2 "cannot build a TensorRT engine here" $EDGEC engine "$WORK/trt-int8" --data "$WORK/eval.jsonl"
    expect 2 "require-engine: cannot build" $EDGEC build "$MODEL" --target trt-fp16 --require-engine --out "$WORK/required"
    expect 0 "simulated" $EDGEC parity "$WORK/trt-int8" --data "$WORK/eval.jsonl"
fi

step "done: $failures failure(s); artifacts in $WORK"
exit $((failures > 0))

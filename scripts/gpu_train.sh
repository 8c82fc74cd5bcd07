#!/usr/bin/env bash
# Train the shipped model's recipe on one GPU in under ten minutes, on any Keras backend.
#
# Here (once): pack the data and fetch Keras as wheels into the git-ignored folder .gpu:
#   python scripts/gpu_data.py pack --data ../shared/data/ferplus --out .gpu/data
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .gpu/wheels keras==3.15.1 optree==0.20.0 namex==0.1.0
# There, from the repository root, with .gpu beside it and JAX (or PyTorch) installed:
#   bash scripts/gpu_train.sh OUT_DIR
#
# Stage 1, in parallel: two wide teachers (64-128-256-512 filters, 512 dense units) from scratch,
# and two students of the shipped size from the shipped weights, one with logit adjustment; all
# on FER+ vote shares. Stage 2, in parallel: each student goes on, taught by both teachers.
# Every run is `python -m emotion.training` with a --time-budget; the recipe it saves records
# the epochs that fitted, so any run can be repeated with --epochs instead.
# OUT_DIR receives, per student, a .tgz of its checkpoint (best.keras, state.json, log.csv) and
# figures, and runs.tgz with every run's figures and log. Here, the shipped file is made from a
# student's checkpoint on TensorFlow, which adds the runtime:
#   python -m emotion.training --data ../shared/data/ferplus --checkpoints DIR/checkpoints --resume
set -uo pipefail
out=${1:?usage: bash scripts/gpu_train.sh OUT_DIR}
budget=${GPU_BUDGET_S:-530}  # seconds for the whole script
limit=${GPU_LIMIT:+--limit $GPU_LIMIT}  # a few hundred faces: a smoke test of the script
started=$SECONDS
mkdir -p "$out"

python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/keras-site .gpu/wheels/*.whl
export PYTHONPATH=/tmp/keras-site:$PWD PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several trainings share the GPU
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
if ! python3 -c "import keras; keras.ops.convert_to_numpy(keras.ops.ones(2) * 2)"; then
    echo "Keras does not run on $KERAS_BACKEND here: trying torch"
    export KERAS_BACKEND=torch
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 scripts/gpu_data.py unpack --packed .gpu/data --out /tmp/ferplus || exit 1

runs=gpu-run  # relative, so that the recipes saved in the models name no machine's folders
common=(--data /tmp/ferplus --label-smoothing 0 $limit)
teacher=(--widths 64,128,256,512 --dense-units 512)
student=(--peak-learning-rate 0.02 --warmup-epochs 1)

launch() {  # name, seconds, options...
    local name=$1 seconds=$2
    shift 2
    mkdir -p "$runs/$name"
    # A run that overruns its budget by much is stopped; its best checkpoint so far stays.
    timeout $((seconds + 45)) python3 -m emotion.training "${common[@]}" --out "$runs/$name/emotion_cnn.keras" \
        --checkpoints "$runs/$name/checkpoints" --time-budget "$seconds" "$@" >"$runs/$name.log" 2>&1 &
}

stage1=$(((budget - (SECONDS - started)) * 55 / 100))
echo "stage 1: $stage1 s"
launch teacher1 "$stage1" "${teacher[@]}" --seed 1
launch teacher2 "$stage1" "${teacher[@]}" --seed 2
launch student "$stage1" "${student[@]}" --init-from model/emotion_cnn.keras
launch student_la "$stage1" "${student[@]}" --init-from model/emotion_cnn.keras --logit-adjustment 1.0
wait

stage2=$((budget - (SECONDS - started) - 25))  # 25 s to pack the results
echo "stage 2: $stage2 s"
teachers=$runs/teacher1/checkpoints/best.keras,$runs/teacher2/checkpoints/best.keras
taught=(--teachers "$teachers" --distill-weight 0.5 --distill-temperature 1 --peak-learning-rate 0.01 --warmup-epochs 1)
launch taught "$stage2" "${taught[@]}" --init-from "$runs/student/checkpoints/best.keras"
launch taught_la "$stage2" "${taught[@]}" --init-from "$runs/student_la/checkpoints/best.keras" --logit-adjustment 1.0
wait

for name in student student_la taught taught_la; do
    tar czf "$out/$name.tgz" -C "$runs/$name" checkpoints/best.keras checkpoints/state.json \
        checkpoints/log.csv metrics.json 2>/dev/null || echo "$name left no checkpoint"
done
tar czf "$out/runs.tgz" "$runs"/*.log "$runs"/*/metrics.json "$runs"/*/checkpoints/log.csv 2>/dev/null
for name in teacher1 teacher2 student student_la taught taught_la; do
    echo "== $name: $(grep -h 'val accuracy\|epochs in\|Error' "$runs/$name.log" | tail -3)"
done
echo "done in $((SECONDS - started)) s"

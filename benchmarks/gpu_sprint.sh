#!/usr/bin/env bash
# The full-setting KD-MRI table on one GPU in one command: 256x256 `make data` set, 16 epochs per stage (4 of AT
# pre-training), 3 seeds x 4x/5x/8x, every cell (factor, seed) trained at once in its own process
# (benchmarks/quality.py --setting gpu: --jobs 9, --precision bf16, channels_last), --augment scale.
# Results, logs and the trained checkpoints go under $OUT.
#
#   bash benchmarks/gpu_sprint.sh prepare   # here: the source volumes and the wheels the GPU machine lacks -> .gpu_sprint/
#   bash benchmarks/gpu_sprint.sh run       # on the GPU machine (device tool: carry .gpu_sprint, OUT is set there)
#   bash benchmarks/gpu_sprint.sh toy       # the same pipeline at toy scale on the CPU (tests/test_gpu_sprint.py)
#
# The GPU machine reaches no network: `prepare` copies the three NIfTI volumes `make data` slices (20 MB) and a
# nibabel wheel into .gpu_sprint/ (in .gitignore), and `run` rebuilds the dataset from them with `kdc data build`
# (the same slices and masks as `make data`). The CS row needs BART, which the GPU machine does not have: add it
# here afterwards with `python benchmarks/quality.py --setting gpu --report-only --cs --runs RUNS` on the returned
# runs. Every cell resumes from its run directory, so a cut-off sprint continues with the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu_sprint
PYTHON=${PYTHON:-python3}
mode=${1:-}

case "$mode" in
prepare)
    PY=.venv/bin/python
    mkdir -p "$STAGE/volumes"
    for source in mni2009a mni152 colin27; do
        path=$($PY -c "from kdc.data.build import locate_source; print(locate_source('$source') or '')")
        test -n "$path" || { echo "error: volume $source is not installed (make data installs it)" >&2; exit 1; }
        cp "$path" "$STAGE/volumes/$source.nii.gz"
    done
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        -d "$STAGE/whl" "nibabel==$($PY -c 'import nibabel; print(nibabel.__version__)')"
    du -sh "$STAGE"
    ;;
run | toy)
    : "${OUT:?set OUT to the folder that receives the results}"
    if compgen -G "$STAGE/whl/*.whl" >/dev/null; then
        $PYTHON -m pip install -q --no-index --no-deps --no-compile --target /tmp/kdc-site "$STAGE"/whl/*.whl
        export PYTHONPATH="$PWD:/tmp/kdc-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
    runs=${RUNS:-$OUT/runs}
    if [ "$mode" = run ]; then
        data=${DATA:-/tmp/kdc-brain}
        test -f "$data/dataset.json" || $PYTHON -m kdc data build --out "$data" \
            --volume "$STAGE/volumes/mni2009a.nii.gz" --volume "$STAGE/volumes/mni152.nii.gz" \
            --volume "$STAGE/volumes/colin27.nii.gz"
        options=(--setting gpu --data "$data")
        nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" || true
    else  # two cells of one factor at once, one epoch per stage, on the CPU
        options=(--setting cpu --data "${DATA:-demo}" --factors 4 --seeds 0 1 --jobs 2 --epochs 1
                 --pretrain-epochs 1 --device cpu --precision "${PRECISION:-auto}")
    fi
    started=$(date +%s)
    $PYTHON benchmarks/quality.py "${options[@]}" --augment scale --runs "$runs" --results "$OUT/quality" \
        2>&1 | tee "$OUT/sprint.log"
    echo "sprint: $(( $(date +%s) - started )) s" | tee -a "$OUT/sprint.log"
    # The checkpoints and logs of every cell, small enough to come back from the GPU machine in one file.
    tar -czf "$OUT/runs.tar.gz" -C "$runs" --exclude='*/cache' --exclude='*/state' --exclude=data .
    ;;
*)
    echo "usage: bash benchmarks/gpu_sprint.sh prepare|run|toy" >&2
    exit 2
    ;;
esac

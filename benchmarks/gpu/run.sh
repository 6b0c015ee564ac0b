#!/usr/bin/env bash
# The GPU check of issue 18, on a CUDA machine without network: install the carried wheels (.whl/, see
# benchmarks/gpu/wheels.txt) and alignkit into a target folder, put it on PYTHONPATH, run the driver.
# Results: $OUT/results.json, $OUT/nvidia-smi.txt, $OUT/logs/ (OUT defaults to ./gpu_out).
#
#   bash benchmarks/gpu/run.sh              # the GPU run (about 8 minutes)
#   bash benchmarks/gpu/run.sh --dry-run    # tiny sizes, CUDA-only steps skipped: checks the script on CPU
#
# PYTHON picks the interpreter (default python3); ALIGNKIT_GPU_TARGET the install folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
export OUT=${OUT:-$PWD/gpu_out}
TARGET=${ALIGNKIT_GPU_TARGET:-${TMPDIR:-/tmp}/alignkit-gpu-packages}
mkdir -p "$OUT/logs"
start=$(date +%s)

rm -rf "$TARGET"
shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} )); then
    # one at a time: a wheel this interpreter cannot take (a cp312 wheel in a dry run elsewhere) is named, not fatal
    : >"$OUT/logs/install.log"
    failed=()
    for wheel in "${wheels[@]}"; do
        "$PYTHON" -m pip install --no-index --no-deps --target "$TARGET" "$wheel" >>"$OUT/logs/install.log" 2>&1 \
            || failed+=("$(basename "$wheel")")
    done
    echo "installed $(( ${#wheels[@]} - ${#failed[@]} )) of ${#wheels[@]} carried wheels into $TARGET"
    (( ${#failed[@]} == 0 )) || echo "run.sh: not installed (see logs/install.log): ${failed[*]}"
else
    echo "run.sh: no wheels in .whl/ (carry it: see benchmarks/gpu/README.md); steps needing them will be skipped"
fi
leftovers=(); for d in build alignkit.egg-info; do [[ -e $d ]] || leftovers+=("$d"); done
# alignkit itself, built offline with the image's setuptools; the driver imports this same working tree
if "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation --target "$TARGET" . \
        >>"$OUT/logs/install.log" 2>&1; then
    echo "installed alignkit from the working tree"
else
    echo "run.sh: note: alignkit did not build offline (see logs/install.log); using the source tree"
fi
rm -rf "${leftovers[@]}"  # what the build left in the tree (only what was not there before)
export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
echo "install took $(( $(date +%s) - start )) s"

status=0
"$PYTHON" benchmarks/gpu/driver.py --out "$OUT" "$@" || status=$?
echo "run.sh: finished in $(( $(date +%s) - start )) s, driver exit status $status"
exit $status

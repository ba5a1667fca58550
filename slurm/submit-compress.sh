#!/bin/bash
# Submit the compression of a collection: one array task per manifest line, then the aggregate
# job (afterany: it runs even when some tasks fail, and reports them).
#
#   slurm/submit-compress.sh MANIFEST OUT_ROOT [extra sbatch options for the array job...]
#
# COMPRESS_ARGS, PYTHON and SRUN_MPI in the environment travel to the jobs (--export=ALL).
set -eu
if [ $# -lt 2 ]; then
    echo "usage: $0 MANIFEST OUT_ROOT [sbatch options...]" >&2
    exit 2
fi
MANIFEST=$(realpath "$1")
OUT_ROOT=$(realpath -m "$2")
shift 2
here=$(dirname "$(realpath "$0")")
n=$(grep -cv '^[[:space:]]*\(#\|$\)' "$MANIFEST" || true)
if [ "$n" -lt 1 ]; then
    echo "$0: ${MANIFEST} lists no dataset" >&2
    exit 2
fi
mkdir -p "$OUT_ROOT"
export MANIFEST OUT_ROOT
array=$(sbatch --parsable --array="0-$((n - 1))" --export=ALL \
    --output="${OUT_ROOT}/hpcquests-compress-%A_%a.out" "$@" "${here}/compress-array.sbatch")
array=${array%%;*}
agg=$(sbatch --parsable --dependency="afterany:${array}" --export=ALL \
    --output="${OUT_ROOT}/hpcquests-aggregate-%j.out" "${here}/aggregate.sbatch")
echo "array ${array} (${n} datasets), aggregate ${agg%%;*}"

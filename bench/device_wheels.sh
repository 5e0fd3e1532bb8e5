#!/usr/bin/env bash
# The wheels that bench/device_check.sh carries to the GPU machine (Python 3.12, x86-64, no package
# registry there): what its python3 lacks, and a NumPy that its numba can compile with. Run it HERE
# (where pip reaches the registry), from anywhere; it fills <repo>/.whl/ (ignored by git):
#
#     bash bench/device_wheels.sh
#
# then name .whl in the device call's carry (it also notes the commit in .whl/SOURCE: the machine gets no
# .git). It is idempotent: a wheel already there is kept, another
# version of a listed package is removed (two versions of one package stop the whole install there), and
# so is any wheel of a package not listed here. Prints the wheels and their total size; exits 1 with one
# line on failure.
#
# What is carried, and why (the machine's python3 has attrs, which jsonschema needs):
#   pydantic, pydantic-core, annotated-types, typing-inspection, typing-extensions: gpucal's profile model
#          (gpucal.profiles.model) validates every document with pydantic; the typing-extensions pydantic 2.14
#          needs, whatever the machine's is.
#   jsonschema, referencing, rpds-py, jsonschema-specifications: the tests check the published schema and the
#          built-in documents with jsonschema.
#   mpich: the MPI library and mpiexec for the machine's mpi4py (it has mpi4py but no MPI library);
#          the version the project's venv uses with mpi4py 4.1.2 (pyproject's [mpi] and [test] extras).
#   numpy: the machine's numpy 2.5.2 breaks its numba: numba 0.68.0 says numpy>=1.22,<2.6, but
#          numba-cuda's CUDA target overloads np.row_stack for every numpy >= 2.0, and numpy 2.5 removed
#          np.row_stack, so no kernel compiles. The newest numpy below 2.5 is 2.4.6 (a cp312 manylinux
#          wheel), inside numba's bound and cupy-cuda13x 14.2's (numpy>=2.0,<2.6).
# numba and numba-cuda are not carried: numba-cuda works through a .pth file in the machine's
# site-packages, which a --target install on PYTHONPATH would not read.
set -euo pipefail

ME=device_wheels.sh
trap 'echo "$ME: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
die() { trap - ERR; echo "$ME: $*" >&2; exit 1; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEST=.whl
PY=${PYTHON:-python3}
WHEELS=(
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    jsonschema==4.26.0
    referencing==0.37.0
    rpds-py==2026.9.1
    jsonschema-specifications==2025.9.1
    mpich==5.0.2
    numpy==2.4.6
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
LIMIT_MIB=56  # what travels to the machine is at most 64 MiB, the repository's files included

"$PY" -m pip --version >/dev/null 2>&1 || die "no pip for $PY (set PYTHON to a python3 with pip)"
mkdir -p "$DEST"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# a wheel's file name starts with its distribution name, lower case, '-' and '.' as '_', then '-'
norm() { local s=${1,,}; s=${s//-/_}; printf '%s' "${s//./_}"; }

platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done

shopt -s nullglob
listed=()
for spec in "${WHEELS[@]}"; do
    name=${spec%%==*} version=${spec##*==}
    prefix="$(norm "$name")-"
    listed+=("$prefix")
    kept=""
    for w in "$DEST"/*.whl; do
        base=$(basename "$w")
        lower=${base,,}
        [[ $lower == "$prefix"* ]] || continue
        if [[ $lower == "$prefix$version-"* && -z $kept ]]; then
            kept=$base
        else
            echo "removing $base (not $spec)"
            rm -f "$w"
        fi
    done
    if [[ -n $kept ]]; then
        echo "have $kept"
        continue
    fi
    rm -rf "${TMP:?}/dl" && mkdir -p "$TMP/dl"
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platform_args[@]}" -d "$TMP/dl" "$spec" >"$TMP/pip.log" 2>&1; then
        why=$(grep -m1 -E '^ERROR' "$TMP/pip.log" || tail -n 1 "$TMP/pip.log")
        die "cannot download $spec as a cp312 manylinux x86-64 wheel: ${why:-pip failed}"
    fi
    got=("$TMP"/dl/*.whl)
    [[ ${#got[@]} -eq 1 ]] || die "pip download $spec gave ${#got[@]} wheels, not one"
    mv "${got[0]}" "$DEST/"
    echo "downloaded $(basename "${got[0]}")"
done

# nothing else: a wheel of a package not listed would be installed there too
for w in "$DEST"/*.whl; do
    lower=$(basename "$w")
    lower=${lower,,}
    ours=0
    for prefix in "${listed[@]}"; do
        if [[ $lower == "$prefix"* ]]; then ours=1; fi
    done
    if [[ $ours == 0 ]]; then
        echo "removing $(basename "$w") (not in this script's list)"
        rm -f "$w"
    fi
done

# each wheel must install on CPython 3.12 on x86-64 Linux: cp312, abi3 or py3 code; manylinux x86_64 or any
wheels=("$DEST"/*.whl)
[[ ${#wheels[@]} -eq ${#WHEELS[@]} ]] || die "$DEST holds ${#wheels[@]} wheels, not the ${#WHEELS[@]} listed"
total=0
echo "wheels in $DEST:"
for w in "${wheels[@]}"; do
    base=$(basename "$w" .whl)
    IFS=- read -r -a parts <<<"$base"
    n=${#parts[@]}
    ((n >= 5)) || die "$(basename "$w"): not a wheel file name"
    py=${parts[n - 3]} abi=${parts[n - 2]} plat=${parts[n - 1]}
    [[ $py =~ (^|\.)(cp312|py3|py312)(\.|$) ]] || die "$(basename "$w"): not for CPython 3.12 ($py)"
    [[ $abi =~ (^|\.)(cp312|abi3|none)(\.|$) ]] || die "$(basename "$w"): ABI $abi does not load on CPython 3.12"
    [[ $plat == any || ($plat == *x86_64* && $plat == *manylinux*) ]] || die "$(basename "$w"): platform $plat is not manylinux x86-64"
    size=$(stat -c %s "$w")
    total=$((total + size))
    printf '  %9.1f KiB  %s\n' "$(awk -v s="$size" 'BEGIN { print s / 1024 }')" "$(basename "$w")"
done
mib=$(awk -v s="$total" 'BEGIN { printf "%.1f", s / 1048576 }')
echo "total: ${#wheels[@]} wheels, $total bytes ($mib MiB)"
((total <= LIMIT_MIB * 1048576)) || die "the wheels take $mib MiB, over $LIMIT_MIB MiB: they would not travel"

# the machine gets the working tree without .git: the commit it runs, for bench/device_check.sh's summary
if commit=$(git rev-parse HEAD 2>/dev/null); then
    changed=$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)
    if ((changed)); then commit="$commit with $changed file(s) changed"; fi
    printf '%s\n' "$commit" >"$DEST/SOURCE"
    echo "source: $commit ($DEST/SOURCE)"
fi

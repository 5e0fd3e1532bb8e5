#!/usr/bin/env bash
# The GPU check, sized for the lent GPU machine: one GPU, Python 3.12 with no package registry, at most
# 600 s a command and 15 minutes of device time a session (a start included), 8 files back from $OUT.
# Here, first: `bash bench/device_wheels.sh` (fills .whl/), then on the machine, in the repository root,
# with .whl carried:
#
#     bash bench/device_check.sh [--phase 1|2]
#
# phase 1 (the default): gpucal info, gpucal calibrate --quick (timed; target 30 s; with the decode terms:
#   the decode-GEMM quick grid, decode attention and the launch costs, and on 2 GPUs or more the one-process
#   all-reduce, into h200.json and plots/decode-gemm.png), bench/plan_check.py (the decode-layer probe of
#   llama-3.1-8b at batch 1, 8, 64 beside gpucal plan --step measured on h200.json, into plan_check.json),
#   the GPU tests (which check that calibration's
#   profile rather than calibrate again), bench/gpu_check.py --quick (with the GEMV against cuBLAS's decode
#   GEMM at batch 1-16, the decode layer probe of llama-3.1-8b at batch 1, 8, 64, eager and as CUDA graphs,
#   and the same layer in PyTorch, the launch probe, and the all-reduce probe with 2 GPUs or more, into
#   gpu_check.json), gpucal p2p (one GPU: the host links).
# phase 2: the GPU tests that need MPI, NCCL collectives on one rank, the MPI network probe and
#   bench/net_pingpong.py on two ranks (mpiexec of the carried mpich), bench/copy_variants.py and
#   bench/gemv_variants.py.
# Before the steps it installs the carried wheels (--target /tmp/site, on PYTHONPATH; in phase 2 the mpich
# wheel into the prefix /tmp/mpich, since --target drops a wheel's lib/ data: MPI4PY_LIBMPI names its
# libmpi.so.12, its bin/ goes first on PATH) and the project offline, then checks the imports and stops
# at once, with one line naming what is missing, where one fails.
#
# Each step runs under its own timeout, and a phase's timeouts add up to well under 600 s, so that a
# rerun of a phase still fits in the session's device time. Each step's output goes to its own log under
# $OUT/work/; a step that fails or times out is recorded and the next one runs. At the end $OUT (default
# bench/out) holds two files: phase<N>.tar.gz (the folder phase<N>/: the logs NN-step.log, summary<N>.txt,
# and what the steps wrote: gpu_check.json, plan_check.json, h200.json and plots/) and summary<N>.txt (the facts, a line
# per step with the end of its output, the timeouts' sum, the total time), which is printed last.
# Exit status 0 when every step passed, 1 otherwise, 2 for a bad argument.
#
# DEVICE_CHECK_DRY_RUN=1 runs the same control flow with every step an echo (tests/cli/test_bench.py);
# there DEVICE_CHECK_DRY_RUN_FAIL=STEP[,STEP] makes those steps fail, and DEVICE_CHECK_DRY_RUN_IMPORTS=
# "MOD ..." runs the real import check on those modules.
set -u -o pipefail

ME=device_check
usage="usage: bash bench/device_check.sh [--phase 1|2]"
PHASE=1
while (($#)); do
    case $1 in
        --phase)
            if (($# < 2)); then echo "$ME: --phase needs 1 or 2 ($usage)" >&2; exit 2; fi
            PHASE=$2
            shift 2
            ;;
        --phase=*) PHASE=${1#--phase=}; shift ;;
        -h | --help) echo "$usage"; exit 0 ;;
        *) echo "$ME: unknown argument '$1' ($usage)" >&2; exit 2 ;;
    esac
done
case $PHASE in
    1 | 2) ;;
    *) echo "$ME: --phase must be 1 or 2, not '$PHASE'" >&2; exit 2 ;;
esac

BUDGET_S=600  # one command's limit on the GPU machine
KILL_S=5      # a step still running this long after its timeout's TERM gets KILL
declare -A LIMIT=(
    [install]=25 [imports]=20
    [pytest]=75 [info]=10 [gpu_check]=90 [p2p]=25 [calibrate]=70 [plan_check]=15
    [pytest_mpi]=85 [collectives]=40 [net]=25 [net_pingpong]=25 [copy_variants]=50 [gemv_variants]=40
)
if [[ $PHASE == 1 ]]; then
    STEPS=(install imports info calibrate plan_check pytest gpu_check p2p)
else
    STEPS=(install imports pytest_mpi collectives net net_pingpong copy_variants gemv_variants)
fi
CALIBRATE_TARGET_S=30

DRY=${DEVICE_CHECK_DRY_RUN:-0}
[[ $DRY == 1 ]] || DRY=0
PY=${PYTHON:-python3}
SITE=${DEVICE_CHECK_SITE:-/tmp/site}              # the carried wheels, on PYTHONPATH
MPI_PREFIX=${DEVICE_CHECK_MPI_PREFIX:-/tmp/mpich}  # the mpich wheel (phase 2)
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0
export GPUCAL_REQUIRE_NUMBA=1  # the GPU tests: the numba backend must run here (tests/gpu/test_gpu_probes.py)

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-bench/out}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd) || exit 1
WORK=$OUT/work
ARCHIVE=$OUT/phase$PHASE.tar.gz
SUMMARY=$OUT/summary$PHASE.txt
rm -rf "$WORK" "$ARCHIVE" "$SUMMARY"
mkdir -p "$WORK" || exit 1

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
oneline() { tr -s '\r\n\t' '   ' | sed 's/[[:space:]]*$//' | cut -c "1-${1:-300}"; }

# the carried wheels, then the project (run under `timeout` through `bash -c`)
# shellcheck disable=SC2317  # called through bash -c
install_carried() {
    local py=$1 site=$2 mpi=$3 phase=$4 w
    local rest=() mpich=()
    shopt -s nullglob
    for w in .whl/*.whl; do
        case ${w##*/} in
            mpich-*) mpich+=("$w") ;;
            *) rest+=("$w") ;;
        esac
    done
    rm -rf "$site" "$mpi"
    if ((${#rest[@]})); then
        echo "+ pip install --target $site ${rest[*]##*/}"
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            "${rest[@]}" || return
    fi
    if ((${#mpich[@]})) && [[ $phase == 2 ]]; then
        echo "+ pip install --prefix $mpi ${mpich[*]##*/}"
        # --ignore-installed: the prefix is not the environment, whatever the environment holds
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed --prefix "$mpi" \
            "${mpich[@]}" || return
    fi
    if ((${#rest[@]} + ${#mpich[@]} == 0)); then echo "no carried wheels in .whl/"; fi
    echo "+ pip install -e . (offline)"
    "$py" -m pip install -q --no-deps --no-build-isolation --no-index -e .
}
export -f install_carried

# Imports each module named; `numba.cuda` must be NVIDIA's numba-cuda, `mpi4py.MPI` must load a library
# (without starting MPI), `mpiexec` must be on PATH. One line `missing: ...` and exit 1, else `versions: ...`.
read -r -d '' IMPORT_CHECK <<'PYTHON'
import importlib, os, shutil, sys
missing, got = [], {}
for name in sys.argv[1:]:
    if name == "mpiexec":
        if not shutil.which("mpiexec"):
            missing.append("mpiexec (not on PATH: carry the mpich wheel, bash bench/device_wheels.sh)")
        continue
    try:
        if name == "mpi4py.MPI":
            import mpi4py
            mpi4py.rc.initialize = mpi4py.rc.finalize = False  # load the library, start nothing
        got[name] = importlib.import_module(name)
    except Exception as exc:
        said = " ".join(str(exc).split())[:200]
        missing.append(f"{name} ({type(exc).__name__}: {said})")
carried = os.environ.get("DEVICE_CHECK_CARRIED_NUMPY")  # the carried numpy's folder, where one was carried
if carried and "numpy" in got and not os.path.realpath(got["numpy"].__file__).startswith(os.path.realpath(carried) + os.sep):
    missing.append(f"the carried numpy (numpy {got['numpy'].__version__} came from {got['numpy'].__file__}, not {carried})")
cuda = got.get("numba.cuda")
if cuda is not None and getattr(cuda, "implementation", None) != "NVIDIA":
    missing.append(f"numba.cuda (implementation {getattr(cuda, 'implementation', None)!r}, not 'NVIDIA': "
                   "numba-cuda is not the CUDA target)")
if missing:
    print("missing: " + "; ".join(missing))
    sys.exit(1)
def version(dist):
    from importlib.metadata import version
    try:
        return version(dist)
    except Exception:
        return "?"
said = [f"python {sys.version.split()[0]}"]
if "numpy" in got:
    said.append(f"numpy {got['numpy'].__version__} ({os.path.dirname(os.path.dirname(got['numpy'].__file__))})")
if "numba" in got:
    said.append(f"numba {got['numba'].__version__}" + (f", numba.cuda {cuda.implementation} (numba-cuda "
                                                      f"{version('numba-cuda')})" if cuda else ""))
for name in ("cupy", "torch"):
    if name in got:
        said.append(f"{name} {getattr(got[name], '__version__', '?')}")
for name in ("pydantic", "jsonschema"):
    if name in got:
        said.append(f"{name} {version(name)}")
if "mpi4py.MPI" in got:
    library = " ".join(got["mpi4py.MPI"].Get_library_version().splitlines()[0].split())
    said.append(f"mpi4py {sys.modules['mpi4py'].__version__} with {library} "
                f"({os.environ.get('MPI4PY_LIBMPI', 'found by mpi4py')})")
print("versions: " + "; ".join(said))
PYTHON
MODULES=(gpucal numpy numba numba.cuda cupy pynvml pydantic jsonschema rich yaml pytest torch)
if [[ $PHASE == 2 ]]; then MODULES+=(mpi4py.MPI mpiexec); fi

# a command as one line, quoted; an argument of several lines (a script) only named
shown() {
    local arg out=()
    for arg in "$@"; do
        if [[ $arg == *$'\n'* ]]; then out+=("<script of ${#arg} characters>"); else out+=("$(printf '%q' "$arg")"); fi
    done
    printf '%s' "${out[*]}"
}

# CMD: the command of step $1 (set once the install has set PATH and PYTHONPATH)
PER_TEST_TIMEOUT=""
command_for() {
    local gpucal=(gpucal)
    command -v gpucal >/dev/null 2>&1 || gpucal=("$PY" -m gpucal)
    local pytest=("$PY" -m pytest -q -p no:cacheprovider -m gpu)
    if [[ $1 == pytest* && -z $PER_TEST_TIMEOUT ]]; then
        PER_TEST_TIMEOUT=none
        if [[ $DRY == 0 ]] && "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then PER_TEST_TIMEOUT=--timeout=80; fi
    fi
    # where pytest-timeout is there: a hung test fails alone, and the others still run and report
    if [[ $PER_TEST_TIMEOUT == --* ]]; then pytest+=("$PER_TEST_TIMEOUT"); fi
    case $1 in
        install) CMD=(bash -c 'install_carried "$@"' install_carried "$PY" "$SITE" "$MPI_PREFIX" "$PHASE") ;;
        imports) CMD=("$PY" -c "$IMPORT_CHECK" "${MODULES[@]}") ;;
        # the GPU tests check the profile the calibrate step wrote instead of calibrating a second time
        pytest) CMD=(env "GPUCAL_GPU_PROFILE=$([[ -f $WORK/h200.json ]] && echo "$WORK/h200.json")" "${pytest[@]}" tests/gpu) ;;
        info) CMD=("${gpucal[@]}" info) ;;
        gpu_check) CMD=("$PY" bench/gpu_check.py --quick --out "$WORK/gpu_check.json") ;;
        p2p) CMD=("${gpucal[@]}" p2p --sizes 4B..64MiB --budget 0.2) ;;
        calibrate) CMD=("${gpucal[@]}" calibrate --quick -o "$WORK/h200.json" --force --plots "$WORK/plots") ;;
        # the decode-layer probe of Llama-3.1-8B at batch 1, 8, 64 beside gpucal plan --step measured on that profile
        plan_check) CMD=("$PY" bench/plan_check.py --gpu "$WORK/h200.json" --out "$WORK/plan_check.json") ;;
        pytest_mpi) CMD=("${pytest[@]}" tests/gpu/test_gpu_collectives.py tests/gpu/test_gpu_cluster.py) ;;
        collectives) CMD=("${gpucal[@]}" probe collectives --graphs --hidden 4096 --budget 0.1) ;;
        net) CMD=(mpiexec -n 2 "${gpucal[@]}" probe net --sizes 8B..16MiB --budget 0.05) ;;
        net_pingpong) CMD=(mpiexec -n 2 "$PY" bench/net_pingpong.py --sizes 8B..1MiB --iters 200) ;;
        copy_variants) CMD=("$PY" bench/copy_variants.py) ;;
        gemv_variants) CMD=("$PY" bench/gemv_variants.py) ;;
        *) echo "$ME: no command for step $1" >&2; exit 2 ;;
    esac
    SHOWN=$(shown "${CMD[@]}")
    if [[ $DRY == 1 ]]; then
        if [[ ,${DEVICE_CHECK_DRY_RUN_FAIL:-}, == *,"$1",* ]]; then
            # shellcheck disable=SC2016  # $1 is the inner shell's
            CMD=(bash -c 'echo "dry run: $1 fails on purpose"; exit 3' dry "$1")
        elif [[ $1 == imports && -n ${DEVICE_CHECK_DRY_RUN_IMPORTS:-} ]]; then
            read -r -a mods <<<"$DEVICE_CHECK_DRY_RUN_IMPORTS"
            CMD=("$PY" -c "$IMPORT_CHECK" "${mods[@]}")
        else
            CMD=(echo "dry run: would run $SHOWN")
        fi
    fi
}

# the end of a step's log for the summary: pytest's skips, failures and result line; gpu_check.py's ratio
# table; else the last lines
log_tail() {
    local name=$1 from
    local log
    log=$(tail -n +2 "$2")
    case $name in
        pytest*)
            grep -E '^(FAILED|ERROR|XPASS) ' <<<"$log" | head -n 10
            grep -E '^(SKIPPED|XFAIL) ' <<<"$log" | head -n 8
            grep -v '^[[:space:]]*$' <<<"$log" | tail -n 1
            ;;
        gpu_check)
            from=$(grep -n 'comparison (same process' <<<"$log" | tail -n 1 | cut -d: -f1)
            if [[ -n $from ]]; then tail -n "+$((from > 1 ? from - 1 : 1))" <<<"$log"; else tail -n 6 <<<"$log"; fi
            ;;
        calibrate | p2p | net | net_pingpong | copy_variants | gemv_variants | collectives) tail -n 5 <<<"$log" ;;
        *) tail -n 3 <<<"$log" ;;
    esac | grep -v '^[[:space:]]*$' | cut -c 1-220
}

TIMEOUTS_S=0
for name in "${STEPS[@]}"; do TIMEOUTS_S=$((TIMEOUTS_S + LIMIT[$name])); done
RESULTS=()
FAILED=()
STARTED=$(now)
N_STEPS=${#STEPS[@]}
I=0
FACTS=""
STOPPED=""

run_step() {
    local name=$1 limit=${LIMIT[$1]} log t0 rc secs state
    I=$((I + 1))
    log=$(printf '%s/%02d-%s.log' "$WORK" "$I" "$name")
    command_for "$name"
    t0=$(now)
    echo "\$ $SHOWN" >"$log"  # the first line of each log; log_tail leaves it out
    # in a subshell that waits (no exec), so that the shell's "Killed" notice goes to the log, not to stdout
    (timeout -k "$KILL_S" "$limit" "${CMD[@]}" </dev/null; exit $?) >>"$log" 2>&1
    rc=$?
    secs=$(since "$t0")
    case $rc in
        0) state=passed ;;
        124 | 137) state=TIMEOUT ;;
        *) state=FAILED ;;
    esac
    local note=""
    if [[ $name == calibrate && $state == passed ]]; then
        note=$(awk -v s="$secs" -v t="$CALIBRATE_TARGET_S" \
            'BEGIN { printf "  (target <= %d s: %s)", t, (s <= t ? "met" : "MISSED") }')
    fi
    [[ $state == passed ]] || FAILED+=("$name (exit $rc)")
    RESULTS+=("$(printf '%-14s exit %3d  %7s s of %3d s  %s%s' "$name" "$rc" "$secs" "$limit" "$state" "$note")")
    local tail_lines
    tail_lines=$(log_tail "$name" "$log" | sed 's/^/        | /')
    if [[ -n $tail_lines ]]; then RESULTS+=("$tail_lines"); fi
    printf '[%d/%d] %-14s %-7s exit %d, %s s\n' "$I" "$N_STEPS" "$name" "$state" "$rc" "$secs"
    LAST_LOG=$log
    return "$rc"
}

facts() {
    local gpu git
    gpu=$(timeout 15 nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,clocks.mem,temperature.gpu,power.draw \
        --format=csv,noheader 2>/dev/null | paste -sd '|' -) || gpu=""
    [[ -n $gpu ]] || gpu="no answer from nvidia-smi"
    # the machine gets a copy of the working tree without .git: bench/device_wheels.sh notes the commit here
    git=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null) || git=$(head -n 1 "$ROOT/.whl/SOURCE" 2>/dev/null) \
        || git="unknown (not a git checkout, no .whl/SOURCE)"
    local versions
    versions=$(grep '^versions: ' "$1" 2>/dev/null | tail -n 1)
    if [[ -z $versions ]]; then
        versions="versions: not read ($([[ $DRY == 1 ]] && echo 'a dry run imports nothing' || echo 'the import check failed'))"
    fi
    printf 'gpu (name, driver, max sm/mem MHz, sm/mem MHz, C, W): %s | date: %s | git: %s | %s' \
        "$gpu" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$git" "$versions"
}

write_summary() {  # the summary so far ($1: how the run stands), rewritten after every step
    local total
    total=$(since "$STARTED")
    {
        echo "gpucal device check, phase $PHASE$([[ $DRY == 1 ]] && echo ' (dry run)')"
        echo "facts: $FACTS"
        echo "steps (name, exit status, seconds of its timeout, state, the end of its log):"
        printf '%s\n' "${RESULTS[@]}"
        echo "timeouts: $TIMEOUTS_S s of $BUDGET_S s (a step is killed $KILL_S s after its timeout at most)"
        local failed=""
        if ((${#FAILED[@]})); then failed=$(printf '%s, ' "${FAILED[@]}"); fi
        echo "total: $total s; $I of ${#STEPS[@]} steps ran, ${#FAILED[@]} failed${failed:+: ${failed%, }}"
        if [[ -n $STOPPED ]]; then echo "stopped: $STOPPED"; fi
        echo "archive: phase$PHASE.tar.gz, folder phase$PHASE/: one log per step (NN-step.log), this summary,"\
            "and what the steps wrote"
        if [[ -n ${1:-} ]]; then echo "$1"; fi
    } >"$SUMMARY.part" && mv -f "$SUMMARY.part" "$SUMMARY"
}

finish() {  # $1: the exit status; writes the summary, packs the archive, removes work/
    local status=$1
    write_summary
    cp "$SUMMARY" "$WORK/"
    if ! tar -czf "$ARCHIVE" -C "$OUT" --transform "s,^work,phase$PHASE," work 2>/dev/null; then
        tar -czf "$ARCHIVE" -C "$OUT" work || echo "$ME: could not pack $ARCHIVE" >&2
    fi
    local size
    size=$(stat -c %s "$ARCHIVE" 2>/dev/null || echo 0)
    if ((size > 16 * 1024 * 1024)); then
        echo "$ME: $ARCHIVE is over 16 MiB ($size B): it will not come back" | tee -a "$SUMMARY" >&2
    fi
    rm -rf "$WORK"
    return "$status"
}

echo "$ME: phase $PHASE$([[ $DRY == 1 ]] && echo ' (dry run)'), ${#STEPS[@]} steps, timeouts $TIMEOUTS_S s of $BUDGET_S s; logs under $WORK"
for name in "${STEPS[@]}"; do
    if run_step "$name"; then
        ok=1
    else
        ok=0
    fi
    # what stands so far, in $OUT itself: a run killed at the machine's limit still brings back a summary
    write_summary "running: $I of ${#STEPS[@]} steps done; the archive is packed at the end"
    if [[ $name == install ]]; then
        if [[ $ok == 0 ]]; then
            STOPPED="the install failed: $(grep -v '^[[:space:]]*$' "$LAST_LOG" | tail -n 1 | oneline 300)"
            echo "$ME: $STOPPED"
            FACTS=$(facts "$LAST_LOG")
            finish 1
            exit 1
        fi
        if [[ $DRY == 0 && -d $SITE ]]; then export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}; fi
        if [[ $DRY == 0 && -d $SITE/numpy ]]; then export DEVICE_CHECK_CARRIED_NUMPY=$SITE; fi
        if [[ $DRY == 0 && $PHASE == 2 ]]; then
            for lib in "$MPI_PREFIX"/lib/libmpi.so.[0-9]*; do  # libmpi.so itself is a linker script
                if [[ -f $lib ]]; then
                    export MPI4PY_LIBMPI=$lib PATH=$MPI_PREFIX/bin:$PATH
                    break
                fi
            done
        fi
    elif [[ $name == imports ]]; then
        if [[ $ok == 0 ]]; then
            hint=""
            compgen -G ".whl/*.whl" >/dev/null || hint=" (no carried wheels: run bash bench/device_wheels.sh here first and carry .whl)"
            STOPPED="$(grep -v '^[[:space:]]*$' "$LAST_LOG" | tail -n 1 | oneline 1500)$hint"
            echo "$ME: $STOPPED"
            FACTS=$(facts "$LAST_LOG")
            finish 1
            exit 1
        fi
        FACTS=$(facts "$LAST_LOG")
        echo "facts: $FACTS"
    fi
done

status=0
((${#FAILED[@]} == 0)) || status=1
finish "$status"
echo
cat "$SUMMARY"
exit "$status"

#!/usr/bin/env bash
# Prove that an exported folder runs on an aarch64 device, on this x86-64 machine.
#
#   scripts/arm_check.sh [options] EXPORT_DIR
#   scripts/arm_check.sh --selftest          # the userland alone, on a small ONNX graph
#
# How: a Debian arm64 userland (the python3 a Debian/Raspberry Pi OS board runs) is unpacked
# from the real arm64 .debs; the real manylinux aarch64 wheels of numpy, onnxruntime,
# tokenizers and tqdm (the versions the host has, so only the architecture differs) and this
# repo's package (pure Python, installed --no-deps: no torch) sit beside it. The arm64 python
# runs under `qemu-aarch64 -L ROOTFS`: no binfmt_misc and no chroot needed, and host paths
# (the export folder, temp files) stay visible as they are. The same probe
# (scripts/arm/probe.py) runs on the host and under emulation: greedy generation and a
# perplexity evaluation through tensorgpt.runtime_demo; the two results are compared.
#
# Exit codes: 0 results match, 1 mismatch, 2 bad arguments or export folder,
#             3 this machine cannot run the check (missing tools, no network for the setup).
#
# The userland is cached in ${TENSORGPT_ARM_CACHE:-$HOME/.cache/tensorgpt/arm64}; a cold setup
# takes about a minute, a cached one a few seconds. Delete that folder (or pass --rebuild) to
# start over.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
ARM_DIR="$SCRIPT_DIR/arm"

# Bump when the cache layout or the way it is built changes: an old cache is then rebuilt.
CACHE_FORMAT=1
CACHE="${TENSORGPT_ARM_CACHE:-$HOME/.cache/tensorgpt/arm64}"
SUITE="${TENSORGPT_ARM_SUITE:-bookworm}" # Debian 12: python3.11, glibc 2.36 (Raspberry Pi OS 12 too)
MIRROR="${TENSORGPT_ARM_MIRROR:-http://deb.debian.org/debian}"
CPU="${TENSORGPT_ARM_CPU:-cortex-a72}" # Raspberry Pi 4 class; also cortex-a53, cortex-a76, neoverse-n1, max
HOST_PY="${PYTHON:-python3}"

PROMPT="The capital of France is"
NEW_TOKENS=16
TEXT_FILE="$ARM_DIR/eval_text.txt"
EVAL_TOKENS=1024
LOGIT_TOL="1e-3"
PPL_RTOL="1e-4" # 0.01 %
REBUILD=0
SELFTEST=0
EXPORT_DIR=""

usage() {
    cat <<EOF
usage: scripts/arm_check.sh [options] EXPORT_DIR
       scripts/arm_check.sh [options] --selftest

Runs EXPORT_DIR (written by 'tensorgpt export') on an emulated aarch64 Debian userland with the
aarch64 wheels of onnxruntime, numpy and tokenizers, and compares greedy tokens, logits and
perplexity with the same run on this machine.

options:
  --prompt TEXT       prompt for the greedy generation (default: "$PROMPT")
  --new-tokens N      tokens to generate (default: $NEW_TOKENS)
  --text FILE         text for the perplexity evaluation (default: scripts/arm/eval_text.txt)
  --eval-tokens N     score at most the text's first N tokens (default: $EVAL_TOKENS; emulation
                      runs a 135M model at about 1 token/s, so keep it small for big models)
  --logit-tol X       max abs logit difference allowed (default: $LOGIT_TOL); for a file with
                      MatMulNBits above accuracy_level 1 the aarch64 run is compared with the
                      file's exact-grid copy (all at level 1) on the host, with X plus the
                      host's own max |logit diff| to that copy (scripts/arm/probe.py says why)
  --ppl-rtol X        max relative perplexity difference allowed (default: $PPL_RTOL; plus the
                      host's own deviation from the exact-grid copy, as above)
  --cpu MODEL         emulated CPU: cortex-a53, cortex-a72, cortex-a76, neoverse-n1, max
                      (default: \$TENSORGPT_ARM_CPU or cortex-a72)
  --rebuild           rebuild the cached userland
  --selftest          check the userland on a small ONNX graph instead of an export folder
  -h, --help          this help

environment: TENSORGPT_ARM_CACHE (cache folder), TENSORGPT_ARM_MIRROR (Debian mirror),
             TENSORGPT_ARM_NO_INSTALL=1 (never apt-get install missing tools), PYTHON (host python)
EOF
}

err() { echo "arm_check: error: $*" >&2; }
usage_error() {
    err "$*"
    echo "run 'scripts/arm_check.sh --help' for usage" >&2
    exit 2
}
need_value() { [[ $# -ge 2 && -n "$2" ]] || usage_error "$1 needs a value"; }
step() { printf 'arm_check: [%3ds] %s\n' "$SECONDS" "$*" >&2; }

# ---------------------------------------------------------------- arguments
while [[ $# -gt 0 ]]; do
    case "$1" in
    -h | --help)
        usage
        exit 0
        ;;
    --prompt) need_value "$@"; PROMPT="$2"; shift 2 ;;
    --new-tokens) need_value "$@"; NEW_TOKENS="$2"; shift 2 ;;
    --text) need_value "$@"; TEXT_FILE="$2"; shift 2 ;;
    --eval-tokens) need_value "$@"; EVAL_TOKENS="$2"; shift 2 ;;
    --logit-tol) need_value "$@"; LOGIT_TOL="$2"; shift 2 ;;
    --ppl-rtol) need_value "$@"; PPL_RTOL="$2"; shift 2 ;;
    --cpu) need_value "$@"; CPU="$2"; shift 2 ;;
    --rebuild) REBUILD=1; shift ;;
    --selftest) SELFTEST=1; shift ;;
    --) shift; break ;;
    -*) usage_error "unknown option '$1'" ;;
    *)
        [[ -z "$EXPORT_DIR" ]] || usage_error "one EXPORT_DIR only (got '$EXPORT_DIR' and '$1')"
        EXPORT_DIR="$1"
        shift
        ;;
    esac
done
if [[ $# -gt 0 ]]; then
    [[ -z "$EXPORT_DIR" && $# -eq 1 ]] || usage_error "one EXPORT_DIR only"
    EXPORT_DIR="$1"
fi

# Everything about the export folder is checked before any slow setup.
if [[ $SELFTEST -eq 1 ]]; then
    [[ -z "$EXPORT_DIR" ]] || usage_error "--selftest takes no EXPORT_DIR"
else
    [[ -n "$EXPORT_DIR" ]] || usage_error "missing EXPORT_DIR (a folder written by 'tensorgpt export')"
    [[ -e "$EXPORT_DIR" ]] || usage_error "EXPORT_DIR '$EXPORT_DIR' does not exist"
    [[ -d "$EXPORT_DIR" ]] || usage_error "EXPORT_DIR '$EXPORT_DIR' is not a folder"
    for f in model.onnx manifest.json tokenizer.json; do
        [[ -f "$EXPORT_DIR/$f" ]] ||
            usage_error "EXPORT_DIR '$EXPORT_DIR' has no $f: is it a folder written by 'tensorgpt export'?"
    done
    EXPORT_DIR="$(cd "$EXPORT_DIR" && pwd)" # absolute: the emulated python sees host paths as they are
    [[ -f "$TEXT_FILE" ]] || usage_error "--text '$TEXT_FILE' does not exist"
    TEXT_FILE="$(cd "$(dirname "$TEXT_FILE")" && pwd)/$(basename "$TEXT_FILE")"
fi
[[ "$NEW_TOKENS" =~ ^[1-9][0-9]*$ ]] || usage_error "--new-tokens must be a positive integer (got '$NEW_TOKENS')"
[[ "$EVAL_TOKENS" =~ ^[0-9]+$ && "$EVAL_TOKENS" -ge 2 ]] ||
    usage_error "--eval-tokens must be an integer >= 2 (got '$EVAL_TOKENS')"

# A fake /proc/cpuinfo per emulated CPU (see write_cpuinfo). Features as an arm64 kernel prints them.
case "$CPU" in
cortex-a53) CPU_PART=0xd03 CPU_FEATURES="fp asimd evtstrm crc32 cpuid" ;;
cortex-a72) CPU_PART=0xd08 CPU_FEATURES="fp asimd evtstrm crc32 cpuid" ;;
cortex-a76) CPU_PART=0xd0b CPU_FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
neoverse-n1) CPU_PART=0xd0c CPU_FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
max) CPU_PART=0xd0c CPU_FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
*) usage_error "--cpu '$CPU' is not one of cortex-a53, cortex-a72, cortex-a76, neoverse-n1, max" ;;
esac

# ---------------------------------------------------------------- host tools
# qemu-aarch64 may be the static build (qemu-user-static) or the dynamic one (qemu-user):
# with -L either runs the guest; only binfmt/chroot setups need the static one.
find_qemu() { command -v qemu-aarch64-static || command -v qemu-aarch64 || true; }

missing_tools() {
    local missing=()
    [[ -n "$(find_qemu)" ]] || missing+=(qemu-user-static)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v dpkg-deb >/dev/null || missing+=(dpkg)
    command -v flock >/dev/null || missing+=(util-linux)
    echo "${missing[@]:-}"
}

MISSING="$(missing_tools)"
if [[ -n "$MISSING" ]]; then
    if [[ $(id -u) -eq 0 && -z "${TENSORGPT_ARM_NO_INSTALL:-}" ]] && command -v apt-get >/dev/null; then
        step "installing $MISSING with apt-get"
        # shellcheck disable=SC2086 # MISSING is a list of package names
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $MISSING >/dev/null 2>&1; then
            # A fresh machine has no package lists yet.
            DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $MISSING >/dev/null 2>&1 || true
        fi
        MISSING="$(missing_tools)"
    fi
    if [[ -n "$MISSING" ]]; then
        err "missing tools: $MISSING"
        echo "install them with:  sudo apt-get update && sudo apt-get install -y $MISSING" >&2
        exit 3
    fi
fi
QEMU="$(find_qemu)"

# The host side runs the same probe, so the host python needs the runtime deps; their versions
# are the ones installed for aarch64, so that only the architecture differs.
HOST_VERSIONS="$("$HOST_PY" - <<'EOF' 2>/dev/null || true
import importlib.metadata as md
out = []
for name in ("numpy", "onnxruntime", "tokenizers", "tqdm"):
    try:
        out.append(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        out.append(f"MISSING:{name}")
print(" ".join(out))
EOF
)"
[[ -n "$HOST_VERSIONS" ]] || { err "cannot run the host python '$HOST_PY'"; exit 3; }
if [[ "$HOST_VERSIONS" == *MISSING:* ]]; then
    err "the host python lacks: $(tr ' ' '\n' <<<"$HOST_VERSIONS" | sed -n 's/^MISSING://p' | xargs)"
    echo "install the runtime there first:  $HOST_PY -m pip install -e '$REPO'" >&2
    exit 3
fi

if [[ $(id -u) -ne 0 ]]; then
    # debootstrap creates device nodes and root-owned files while unpacking.
    [[ -f "$CACHE/rootfs/.tensorgpt-stamp" ]] ||
        { err "building the arm64 userland needs root (debootstrap); run once as root or with sudo"; exit 3; }
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/arm_check.XXXXXX")"
LOCKED=0
cleanup() {
    rm -rf "$TMP"
    # Half-built cache parts are ours to remove only while we hold the lock.
    if [[ $LOCKED -eq 1 ]]; then rm -rf "$CACHE/rootfs.partial" "$CACHE/site.partial"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$CACHE"
# One check at a time per cache: the build and the fake /proc/cpuinfo are shared.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    step "waiting for another arm_check that is using $CACHE"
    flock -w 1800 9 || { err "another arm_check still holds $CACHE/.lock after 30 minutes"; exit 3; }
fi
LOCKED=1

ROOTFS="$CACHE/rootfs"
ROOTFS_STAMP="format=$CACHE_FORMAT suite=$SUITE arch=arm64 variant=minbase include=python3"

# ---------------------------------------------------------------- arm64 userland (cached)
# debootstrap --foreign only resolves and downloads Debian's arm64 packages (and unpacks the
# essential ones); its second stage would need binfmt_misc or a chroot. Nothing needs
# configuring to run python, so every downloaded .deb is simply unpacked with dpkg-deb.
build_rootfs() {
    local part="$CACHE/rootfs.partial" log="$TMP/debootstrap.log"
    rm -rf "$part" "$ROOTFS"
    step "building the arm64 userland ($SUITE, from $MIRROR) in $ROOTFS"
    if ! debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 \
        "$SUITE" "$part" "$MIRROR" >"$log" 2>&1; then
        err "debootstrap failed (network to $MIRROR? set TENSORGPT_ARM_MIRROR); its log ends with:"
        tail -n 15 "$log" >&2
        exit 3
    fi
    local deb
    for deb in "$part"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$part"
        dpkg-deb -f "$deb" Package Version | paste -sd' ' >>"$part/.tensorgpt-packages"
    done
    rm -f "$part"/var/cache/apt/archives/*.deb
    echo "$ROOTFS_STAMP" >"$part/.tensorgpt-stamp"
    mv "$part" "$ROOTFS"
}

if [[ $REBUILD -eq 1 || ! -f "$ROOTFS/.tensorgpt-stamp" || "$(cat "$ROOTFS/.tensorgpt-stamp")" != "$ROOTFS_STAMP" ]]; then
    build_rootfs
fi
ARM_PY="$ROOTFS/usr/bin/python3"
[[ -x "$ARM_PY" ]] || { err "$ARM_PY missing: rerun with --rebuild"; exit 3; }

# onnxruntime's cpuinfo parses /proc/cpuinfo as an ARM kernel writes it; under qemu-user it
# reads the host's x86 text and crashes (SIGSEGV at import). qemu -L looks paths up in ROOTFS
# first, so an ARM-format file there stands in for it.
write_cpuinfo() {
    local n i
    n="$(nproc --all 2>/dev/null || echo 1)"
    {
        for ((i = 0; i < n; i++)); do
            printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\n' "$i" "$CPU_FEATURES"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
            printf 'CPU part\t: %s\nCPU revision\t: 3\n\n' "$CPU_PART"
        done
    } >"$ROOTFS/proc/cpuinfo"
}
mkdir -p "$ROOTFS/proc"
write_cpuinfo

# Runs the arm64 python; host paths outside ROOTFS are seen as they are.
arm_python() {
    env -u PYTHONHOME -u PYTHONSTARTUP PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \
        PYTHONPATH="$ARM_PYTHONPATH" "$QEMU" -cpu "$CPU" -L "$ROOTFS" "$ARM_PY" "$@"
}

ARM_PYVER="$(ARM_PYTHONPATH="" arm_python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" ||
    { err "the arm64 python does not start under $QEMU: rerun with --rebuild"; exit 3; }

# ---------------------------------------------------------------- aarch64 wheels (cached)
# pip on the host resolves and unpacks the aarch64 wheels (fast; emulated pip would take
# minutes). Their pure-Python dependencies come along as a device's pip would install them.
SITE_KEY="format$CACHE_FORMAT-cp${ARM_PYVER/./}-$(tr ' ' '\n' <<<"$HOST_VERSIONS" | sed 's/==//' | paste -sd-)"
SITE="$CACHE/site/$SITE_KEY"
if [[ $REBUILD -eq 1 || ! -f "$SITE/.tensorgpt-stamp" ]]; then
    part="$CACHE/site.partial"
    rm -rf "$part" "$SITE"
    step "installing aarch64 wheels: $HOST_VERSIONS"
    # shellcheck disable=SC2086 # HOST_VERSIONS is a list of requirement specifiers
    if ! "$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$part" --only-binary=:all: --implementation cp --python-version "$ARM_PYVER" \
        --abi "cp${ARM_PYVER/./}" --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
        --platform manylinux_2_34_aarch64 $HOST_VERSIONS >"$TMP/pip.log" 2>&1; then
        err "pip could not get the aarch64 wheels of $HOST_VERSIONS for python $ARM_PYVER; pip says:"
        grep -v '^WARNING: Location' "$TMP/pip.log" | tail -n 15 >&2
        exit 3
    fi
    echo "$SITE_KEY" >"$part/.tensorgpt-stamp"
    mkdir -p "$CACHE/site"
    rm -rf "$CACHE/site/"* # one wheel set at a time: the cache stays at ~400 MB
    mv "$part" "$SITE"
fi

# ---------------------------------------------------------------- this package (every run)
# Installed from a copy of the working tree (so the repo gets no build/ folder), --no-deps:
# what `pip install tensorgpt` puts on a device, minus the deps already in $SITE. Pure Python,
# so the host's pip builds the same files the device would get.
mkdir -p "$TMP/src"
for item in pyproject.toml README.md LICENSE tensorgpt common tt_ops export runtime_demo models; do
    if [[ -e "$REPO/$item" ]]; then cp -r "$REPO/$item" "$TMP/src/"; fi
done
if ! "$HOST_PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --no-deps --no-build-isolation --no-compile --target "$TMP/pkg" "$TMP/src" >"$TMP/pip-self.log" 2>&1; then
    err "pip could not install $REPO (needs setuptools>=68 and wheel on the host); pip says:"
    grep -v '^WARNING: Location' "$TMP/pip-self.log" | tail -n 15 >&2
    exit 3
fi
ARM_PYTHONPATH="$TMP/pkg:$SITE"

# ---------------------------------------------------------------- probe: host, then aarch64
# Same probe, same inputs, same tensorgpt code on both sides (the host uses $TMP/pkg too).
if [[ $SELFTEST -eq 1 ]]; then
    "$HOST_PY" "$ARM_DIR/make_selftest.py" "$TMP/selftest" >/dev/null ||
        { err "could not build the selftest graph (the host needs onnx: pip install onnx)"; exit 3; }
    PROBE_ARGS=(selftest "$TMP/selftest")
else
    PROBE_ARGS=(run "$EXPORT_DIR" --prompt "$PROMPT" --new-tokens "$NEW_TOKENS" --text "$TEXT_FILE"
        --max-tokens "$EVAL_TOKENS")
fi

step "host   ($(uname -m)): running the probe"
PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$TMP/pkg" \
    "$HOST_PY" "$ARM_DIR/probe.py" "${PROBE_ARGS[@]}" --out "$TMP/host" ||
    { err "the probe failed on the host (see above): the export folder does not run here either"; exit 1; }

step "aarch64 (qemu -cpu $CPU, python $ARM_PYVER): running the probe"
arm_python "$ARM_DIR/probe.py" "${PROBE_ARGS[@]}" --out "$TMP/arm" ||
    { err "the probe failed under aarch64 emulation (see above)"; exit 1; }

# A file whose MatMulNBits may pick their precision (accuracy_level 4: int8 activations where
# the CPU has a kernel for them, fp32 elsewhere) is held to its exact-grid copy (every node at
# level 1), within the host's own deviation from it: the rule in scripts/arm/probe.py.
REFERENCE=()
if [[ $SELFTEST -eq 0 ]]; then
    set +e
    PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$TMP/pkg" \
        "$HOST_PY" "$ARM_DIR/probe.py" exact-grid "$EXPORT_DIR" "$TMP/exact-grid"
    grid_rc=$?
    set -e
    if [[ $grid_rc -eq 0 ]]; then
        step "host   ($(uname -m)): running the probe on the exact-grid copy (accuracy_level 1)"
        PROBE_ARGS[1]="$TMP/exact-grid"
        PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$TMP/pkg" \
            "$HOST_PY" "$ARM_DIR/probe.py" "${PROBE_ARGS[@]}" --out "$TMP/reference" ||
            { err "the probe failed on the exact-grid copy (see above)"; exit 1; }
        REFERENCE=(--reference "$TMP/reference")
    elif [[ $grid_rc -ne 4 ]]; then
        err "could not write the exact-grid copy of $EXPORT_DIR (the host needs onnx: pip install onnx)"
        exit 3
    fi
fi

"$HOST_PY" "$ARM_DIR/probe.py" compare "$TMP/host" "$TMP/arm" "${REFERENCE[@]}" \
    --logit-tol "$LOGIT_TOL" --ppl-rtol "$PPL_RTOL"

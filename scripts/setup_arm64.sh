#!/usr/bin/env bash
# An aarch64 ONNX Runtime that runs on this x86_64 host under qemu user-mode emulation, for edgec.running.emulation:
#   HOME/qemu-aarch64-static  qemu-aarch64 from Debian bookworm's qemu-user-static (7.2), extracted, not installed
#   HOME/root/                an arm64 root: Debian bookworm's Python 3.11 and the libraries it and onnxruntime load
#   HOME/root/site/           aarch64 wheels of numpy, onnxruntime and tokenizers, the last two at the host's versions
#                             (tokenizers: an artifact's predict.py runs there with no torch, transformers or edgec)
#   HOME/root/proc/cpuinfo    a cpuinfo of the emulated CPU model (see write_cpuinfo)
#   HOME/versions.txt         "name version" lines: qemu-aarch64, cpu, python, numpy, onnxruntime, tokenizers
#   HOME/ready                written last; "onnxruntime X tokenizers Y": the versions the root was built for
# HOME is $EDGEC_ARM64_HOME, else ~/.cache/edgec/arm64. EDGEC_PYTHON is the host Python whose onnxruntime version
# to match (default: the checkout's .venv, else python3). EDGEC_DEBIAN_MIRROR and EDGEC_DEBIAN_SECURITY_MIRROR
# replace deb.debian.org. No root needed: apt runs on a private state under HOME and nothing is installed.
# Exit 0: ready (at once when it already was; on an aarch64 host, which runs onnxruntime natively, it does nothing).
# Exit 2: this host cannot build it; one line "problem; fix" on stderr. Exit 1: anything else (see HOME/setup.log).
set -euo pipefail

ARM64_HOME=${EDGEC_ARM64_HOME:-$HOME/.cache/edgec/arm64}
ROOT=$ARM64_HOME/root
APT_DIR=$ARM64_HOME/apt
LOG=$ARM64_HOME/setup.log
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# neoverse-n1 (Armv8.2, no SVE): qemu's default `max` model enables SME, and int8 results then diverge from real
# Arm servers; write_cpuinfo describes exactly this model.
CPU=neoverse-n1
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# What python3.11 and onnxruntime's and numpy's wheels load (found by trial: readelf NEEDED, then imports under
# qemu). libffi8 is for ctypes, which numpy imports; ssl, bz2, lzma and sqlite stay unloadable, nothing here uses them.
ARM64_PACKAGES=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8)
WHEEL_PLATFORM=(--only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64
    --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --no-deps)

say() { echo "setup_arm64: $*"; }
die() { echo "setup_arm64: $*" >&2; exit 2; }
fail() { echo "setup_arm64: $*; see $LOG" >&2; exit 1; }

check_host() {
    [ "$(uname -s)" = Linux ] || die "emulation needs a Linux host, this is $(uname -s); run edgec on Linux x86_64 or aarch64"
    if [ "$(uname -m)" = aarch64 ]; then
        say "this host is aarch64; onnxruntime runs natively, no emulation needed"; exit 0
    fi
    [ "$(uname -m)" = x86_64 ] || die "emulation needs an x86_64 host, this is $(uname -m); run edgec on Linux x86_64 or aarch64"
    { command -v apt-get && command -v dpkg-deb; } >/dev/null \
        || die "apt-get and dpkg are missing; run this on a Debian or Ubuntu host"
    [ -r "$KEYRING" ] || die "$KEYRING is missing (it verifies Debian's packages); apt-get install debian-archive-keyring"
    command -v flock >/dev/null || die "flock is missing; apt-get install util-linux"
}

host_python() {
    # The runtime must hold the very onnxruntime version the host compares against.
    local python=${EDGEC_PYTHON:-}
    if [ -z "$python" ]; then
        python=python3
        [ -x "$REPO/.venv/bin/python" ] && python=$REPO/.venv/bin/python
    fi
    "$python" -c 'import importlib.metadata as m; m.version("onnxruntime")' 2>/dev/null \
        || die "onnxruntime is not installed for $python; pip install onnxruntime, or set EDGEC_PYTHON to a Python that has it"
    echo "$python"
}

dist_version() { "$PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))"; }

apt_private() {
    # A private state (lists, cache, empty dpkg status, own sources): nothing of the host's apt is read or changed,
    # and bookworm is named explicitly so the root gets Python 3.11 whatever the host's release.
    local mirror=${EDGEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    local security=${EDGEC_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/parts"
    : >"$APT_DIR/status"
    cat >"$APT_DIR/sources.list" <<EOF
deb [arch=amd64,arm64 signed-by=$KEYRING] $mirror bookworm main
deb [arch=amd64,arm64 signed-by=$KEYRING] $mirror bookworm-updates main
deb [arch=amd64,arm64 signed-by=$KEYRING] $security bookworm-security main
EOF
    APT=(apt-get -q -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Architectures::=amd64
        -o Dir::State::Lists="$APT_DIR/lists" -o Dir::State::status="$APT_DIR/status"
        -o Dir::State::extended_states="$APT_DIR/extended_states" -o Dir::Cache="$APT_DIR/cache"
        -o Dir::Etc::SourceList="$APT_DIR/sources.list" -o Dir::Etc::SourceParts="$APT_DIR/parts"
        -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
    say "apt-get update (Debian bookworm, amd64 and arm64 lists, private state in $APT_DIR)"
    "${APT[@]}" update --error-on=any >>"$LOG" 2>&1 \
        || die "apt-get update of Debian bookworm failed (see $LOG); check access to ${mirror%/debian}, or set EDGEC_DEBIAN_MIRROR"
}

apt_download() {  # apt_download DIR PACKAGE...: the .debs into DIR
    local dir=$1; shift
    mkdir -p "$dir"
    (cd "$dir" && "${APT[@]}" download "$@") >>"$LOG" 2>&1 \
        || die "apt-get download $* failed (see $LOG); check access to Debian's mirror and retry"
}

fetch_qemu() {
    [ -x "$ARM64_HOME/qemu-aarch64-static" ] && return
    say "qemu-aarch64-static from Debian's qemu-user-static (amd64)"
    apt_download "$APT_DIR/debs" qemu-user-static:amd64
    # Only the one binary: the package holds a static qemu for every architecture.
    dpkg-deb --fsys-tarfile "$APT_DIR"/debs/qemu-user-static_*_amd64.deb \
        | tar -xO ./usr/bin/qemu-aarch64-static >"$ARM64_HOME/qemu-aarch64-static.tmp"
    chmod +x "$ARM64_HOME/qemu-aarch64-static.tmp"
    mv "$ARM64_HOME/qemu-aarch64-static.tmp" "$ARM64_HOME/qemu-aarch64-static"
}

fetch_root() {
    [ -x "$ROOT/usr/bin/python3.11" ] && return
    say "arm64 root: ${ARM64_PACKAGES[*]}"
    apt_download "$APT_DIR/debs-arm64" "${ARM64_PACKAGES[@]/%/:arm64}"
    # Unpacked into a temporary folder, renamed when complete: a half-built root never counts as done.
    rm -rf "$ROOT.tmp"
    local deb
    for deb in "$APT_DIR"/debs-arm64/*.deb; do dpkg-deb -x "$deb" "$ROOT.tmp"; done
    [ -x "$ROOT.tmp/usr/bin/python3.11" ] || fail "the arm64 packages hold no usr/bin/python3.11"
    rm -rf "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
}

fetch_wheels() {  # fetch_wheels ORT_VERSION NUMPY_MAX TOKENIZERS_VERSION
    [ -d "$ROOT/site/onnxruntime-$1.dist-info" ] && [ -d "$ROOT/site/tokenizers-$3.dist-info" ] && return
    say "aarch64 wheels: onnxruntime==$1, numpy<=$2, tokenizers==$3 (cp311)"
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "pip is missing for $PYTHON; $PYTHON -m ensurepip, or set EDGEC_PYTHON"
    local wheels=$ARM64_HOME/wheels
    rm -rf "$wheels" "$ROOT/site.tmp"
    # numpy no newer than the host's: the newest one with a cp311 aarch64 wheel that the host's stack also accepts.
    "$PYTHON" -m pip download -q "${WHEEL_PLATFORM[@]}" -d "$wheels" "onnxruntime==$1" "numpy<=$2" "tokenizers==$3" >>"$LOG" 2>&1 \
        || die "pip download of aarch64 onnxruntime==$1, numpy and tokenizers==$3 failed (see $LOG); check access to PyPI"
    "$PYTHON" -m pip install -q --no-index "${WHEEL_PLATFORM[@]}" --target "$ROOT/site.tmp" "$wheels"/*.whl >>"$LOG" 2>&1 \
        || fail "pip install --target of the aarch64 wheels failed"
    rm -rf "$ROOT/site" "$wheels"
    mv "$ROOT/site.tmp" "$ROOT/site"
}

write_cpuinfo() {
    # onnxruntime's CPU detection parses /proc/cpuinfo and crashes on the host's x86 one; qemu 7.2 does not fake it
    # (newer qemu does), but with -L it opens ROOT/proc/cpuinfo first. Values are qemu's neoverse-n1: MIDR 0x414fd0c1,
    # and the Features of the HWCAP (0x119ffb) qemu 7.2 reports for it. One entry per host CPU, as sysfs says.
    local cpu
    mkdir -p "$ROOT/proc"
    for cpu in $(seq 0 $(($(getconf _NPROCESSORS_CONF) - 1))); do
        printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$cpu"
        printf 'Features\t: fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
    done >"$ROOT/proc/cpuinfo"
}

emulated_python() {
    # -S: no site, so no user or host site-packages; only the root's stdlib and PYTHONPATH's wheels.
    env -i PATH=/usr/bin:/bin PYTHONPATH="$ROOT/site" \
        "$ARM64_HOME/qemu-aarch64-static" -cpu "$CPU" -L "$ROOT" "$ROOT/usr/bin/python3.11" -S "$@"
}

write_versions() {  # write_versions ORT_VERSION TOKENIZERS_VERSION: smoke-test the runtime, then record what it holds
    # Importing onnxruntime loads its native library, and with it the CPU detection that needs the cpuinfo.
    local probe='import platform, numpy, onnxruntime as o, tokenizers
print("machine", platform.machine()); print("python", platform.python_version())
print("numpy", numpy.__version__); print("onnxruntime", o.__version__); print("tokenizers", tokenizers.__version__)'
    local seen
    seen=$(emulated_python -c "$probe" 2>>"$LOG") || fail "the emulated Python could not import onnxruntime"
    grep -qx "machine aarch64" <<<"$seen" || fail "the emulated Python reports $(head -1 <<<"$seen"), not aarch64"
    grep -qx "onnxruntime $1" <<<"$seen" || fail "the emulated onnxruntime is not $1"
    grep -qx "tokenizers $2" <<<"$seen" || fail "the emulated tokenizers is not $2"
    {
        echo "qemu-aarch64 $("$ARM64_HOME/qemu-aarch64-static" --version | head -1 | cut -d' ' -f3-)"
        echo "cpu $CPU"
        grep -v '^machine ' <<<"$seen"
    } >"$ARM64_HOME/versions.txt"
}

main() {
    check_host
    PYTHON=$(host_python)
    local ort_version tokenizers_version stamp
    ort_version=$(dist_version onnxruntime)
    tokenizers_version=$(dist_version tokenizers)
    stamp="onnxruntime $ort_version tokenizers $tokenizers_version"
    [ "$(cat "$ARM64_HOME/ready" 2>/dev/null)" = "$stamp" ] && exit 0
    mkdir -p "$ARM64_HOME"
    # One build at a time: a second caller waits, then finds it ready.
    exec 9>"$ARM64_HOME/.lock"
    flock 9
    [ "$(cat "$ARM64_HOME/ready" 2>/dev/null)" = "$stamp" ] && exit 0
    rm -f "$ARM64_HOME/ready"
    : >"$LOG"
    if [ ! -x "$ARM64_HOME/qemu-aarch64-static" ] || [ ! -x "$ROOT/usr/bin/python3.11" ]; then
        apt_private
        fetch_qemu
        fetch_root
        rm -rf "$APT_DIR"  # lists and .debs are needed only once: 100+ MB
    fi
    fetch_wheels "$ort_version" "$(dist_version numpy)" "$tokenizers_version"
    write_cpuinfo
    write_versions "$ort_version" "$tokenizers_version"
    echo "$stamp" >"$ARM64_HOME/ready"
    say "ready in $ARM64_HOME: $(paste -sd' ' "$ARM64_HOME/versions.txt")"
}

main "$@"

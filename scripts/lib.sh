# shellcheck shell=bash
# Shared helpers for scripts/setup and scripts/test. Source it; don't run it.

COIL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COIL_PACKAGES_FILE="${COIL_PACKAGES_FILE:-$COIL_ROOT/scripts/packages.txt}"
COIL_JOBS="${COIL_JOBS:-$(nproc 2>/dev/null || echo 2)}"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The package list, one name a line, comments and blank lines dropped.
coil_packages() {
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$COIL_PACKAGES_FILE" | grep -v '^$'
}

# Prints the packages from packages.txt that are not fully installed.
coil_missing_packages() {
    local pkg status
    while IFS= read -r pkg; do
        status="$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == ii* ]] || printf '%s\n' "$pkg"
    done < <(coil_packages)
}

# Installs whatever is missing; quick and silent-ish when all is there.
coil_install_deps() {
    command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: coil's setup needs Debian 12 (apt/dpkg)"
    local -a missing
    mapfile -t missing < <(coil_missing_packages)
    if ((${#missing[@]} == 0)); then
        log "system packages: all $(coil_packages | wc -l) installed"
        return 0
    fi
    log "installing ${#missing[@]} missing package(s): ${missing[*]}"
    local -a sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install as root: apt-get install ${missing[*]}"
        sudo=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Use-Pty=0 "${missing[@]}" </dev/null
    mapfile -t missing < <(coil_missing_packages)
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
    log "system packages: installed"
}

# coil_build DIR BUILD_TYPE [extra cmake args...]
coil_build() {
    local dir="$1" type="$2"
    shift 2
    # Explicit returns: callers may run this where set -e is off (in a || list).
    log "configuring $dir ($type${*:+ $*})"
    cmake -S "$COIL_ROOT" -B "$COIL_ROOT/$dir" -DCMAKE_BUILD_TYPE="$type" "$@" || return
    log "building $dir with $COIL_JOBS jobs"
    cmake --build "$COIL_ROOT/$dir" -j "$COIL_JOBS" || return
}

# shellcheck shell=bash
# Sourced by scripts: installs the Debian 12 packages the project needs, if any are missing.
pbft_ensure_deps() {
    local pkgs=(build-essential cmake pkg-config libsodium-dev libnng-dev librocksdb-dev
        libcmocka-dev libjansson-dev "$@")
    local missing=()
    local p
    for p in "${pkgs[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing missing packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}"
    fi
}

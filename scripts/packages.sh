# The Debian packages the tests, the demo and the benchmarks need, installed when missing (as root).
# Sourced by scripts/test and scripts/demo.
PROCKET_DEBIAN_PACKAGES="gcc libc6-dev musl-tools python3-venv util-linux strace sudo curl dnsutils iputils-ping iproute2"

install_debian_packages() {
    local missing=()
    for package in $PROCKET_DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages (${missing[*]}); as root: apt-get install ${missing[*]}" >&2
        return 0
    fi
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

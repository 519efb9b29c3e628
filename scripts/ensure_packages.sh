#!/usr/bin/env bash
# Install the Debian packages named on the command line that are not installed yet.
#
#   scripts/ensure_packages.sh bind9 bind9-dnsutils redis-server
#
# Idempotent and quiet when everything is there: apt-get update and install run
# only when something is missing. As root it installs; otherwise it says what is
# missing and how to install it, and exits 0 unless ENSURE_PACKAGES_STRICT=1
# (tests that need a missing tool skip themselves, or fail under CI=true).
set -euo pipefail

missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_packages: missing ${missing[*]} and apt-get is not available; install them by hand" >&2
    [[ "${ENSURE_PACKAGES_STRICT:-0}" == 1 ]] && exit 1
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "ensure_packages: missing Debian packages: ${missing[*]}" >&2
    echo "ensure_packages: install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    [[ "${ENSURE_PACKAGES_STRICT:-0}" == 1 ]] && exit 1
    exit 0
fi

echo "ensure_packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Keep apt from starting the packages' system services: a system named would take
# port 53, and the tests and demo start their own servers on free loopback ports.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    trap '[[ $own_policy == 1 ]] && rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

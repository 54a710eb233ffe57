#!/usr/bin/env bash
# Installs the system tools the test suite drives for real, when they are missing: Chromium for
# the browser tests, Debian's docker-registry for the registry tests, unshare/ip for the private
# engines and Chromium's own network namespace. As root on Debian/Ubuntu it installs them with
# apt-get; elsewhere it names what to install and fails, so no test silently skips.
set -euo pipefail

declare -A package_for=(
  [chromium]=chromium
  [docker-registry]=docker-registry
  [unshare]=util-linux
  [ip]=iproute2
)
missing=()
for tool in "${!package_for[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_for[$tool]}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "test tools: chromium, docker-registry, unshare, ip present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test tools missing: ${missing[*]}. Install them (Debian/Ubuntu:" \
       "sudo apt-get install -y ${missing[*]}) and run again." >&2
  exit 1
fi
started=$(date +%s)
echo "test tools: installing ${missing[*]} with apt-get"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "test tools: installed ${missing[*]} in $(( $(date +%s) - started ))s"

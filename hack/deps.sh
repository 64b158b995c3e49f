#!/usr/bin/env bash
# Installs the Debian packages the tests use when they are missing, once per
# machine: a clean CI machine has none of them. Each line names a command the
# tests run and the package that brings it.
set -euo pipefail

declare -A packages=(
  # BIND 9 as a secondary, and delv to validate DNSSEC answers.
  [named]=bind9
  [named-checkconf]=bind9-utils
  [dnssec-keygen]=bind9-utils
  [delv]=bind9-dnsutils
  [dig]=bind9-dnsutils
  # Headless Chromium fetches through berth-proxy's PAC file.
  [chromium]=chromium
  # Podman, the second engine the exporter's end-to-end tests run against.
  [podman]=podman
  # Rootless Podman: the user's ID ranges and its network.
  [newuidmap]=uidmap
  [slirp4netns]=slirp4netns
  # Prometheus's promtool checks and unit-tests deploy/prometheus's rules.
  [promtool]=prometheus
  # systemd-analyze verifies deploy/systemd's units.
  [systemd-analyze]=systemd
  # docker-compose validates deploy/'s Compose files.
  [docker-compose]=docker-compose
)

missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("${packages[$cmd]}")
done
((${#missing[@]})) || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing ${missing[*]} (Debian packages the tests use)" >&2
sudo=""; [[ $(id -u) == 0 ]] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

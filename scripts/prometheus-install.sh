#!/usr/bin/env bash
# Make sure Debian's prometheus package (the `prometheus` server and `promtool`) is present:
# the metrics tests check /metrics with `promtool check metrics` and have a real Prometheus
# scrape the service. CI machines start without it. Prints the directory holding promtool.
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  as_root=""
  [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get update -qq >&2
  # the package's service is never started here (no init system on CI machines)
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
    prometheus >&2
fi
dirname "$(command -v promtool)"

#!/usr/bin/env bash
# Make sure Debian's chromium package is present: the report test opens a generated
# `morphtune report` page in headless Chromium, screenshots it and fails on console errors or
# broken images (and fails, not skips, when MORPHTUNE_REQUIRE_CHROMIUM is set). CI machines
# start without it. Prints the path of the chromium binary.
set -euo pipefail
find_chromium() { command -v chromium || command -v chromium-browser || true; }
if [ -z "$(find_chromium)" ]; then
  as_root=""
  [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get update -qq >&2
  # fonts-dejavu-core: text in the screenshot renders even on a minimal image
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >&2
fi
CHROMIUM="$(find_chromium)"
if [ -z "$CHROMIUM" ]; then
  echo "chromium-install: chromium is still not on PATH after apt-get install" >&2
  exit 1
fi
echo "$CHROMIUM"

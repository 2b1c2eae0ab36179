#!/usr/bin/env bash
# The JUnit schema Jenkins' xunit plugin uses (junit-10.xsd), as pytest's source distribution
# carries it for its own tests: fetched once from the package index into a cache, never
# committed. Prints the path. Usage: tools/fetch-junit-xsd.sh [PYTHON]
set -euo pipefail
py=${1:-python3}
version=$("$py" -c 'import pytest; print(pytest.__version__)')
cache=${XDG_CACHE_HOME:-$HOME/.cache}/qmpgmem/junit-xsd/pytest-$version
xsd=$cache/junit-10.xsd
if [ ! -s "$xsd" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "pytest==$version" \
    >/dev/null 2>"$tmp/pip.log" || { cat "$tmp/pip.log" >&2; exit 1; }
  mkdir -p "$cache"
  tar -xzf "$tmp"/pytest-*.tar.gz -C "$tmp" --wildcards '*/testing/example_scripts/junit-10.xsd'
  cp "$tmp"/pytest-*/testing/example_scripts/junit-10.xsd "$xsd.tmp"
  mv "$xsd.tmp" "$xsd"
fi
echo "$xsd"

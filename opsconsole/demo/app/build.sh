#!/bin/sh
# Build the sample app: stamp the version, pack what the hosts need.
set -eu
mkdir -p dist
echo "${OPSCONSOLE_VERSION:-$(git rev-parse --short HEAD)}" > VERSION
tar czf dist/app.tar.gz app.py VERSION $(ls HEALTHY message.txt 2>/dev/null)
echo "built dist/app.tar.gz for version $(cat VERSION)"

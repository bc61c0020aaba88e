#!/usr/bin/env bash
# Generate the shell completions and the man page the .deb ships, from the
# binary's own clap definition, into target/assets/ (where Cargo.toml's
# [package.metadata.deb] assets expect them). Run before `cargo deb`:
#   cargo build --locked && scripts/deb-assets.sh && cargo deb --locked
# BIN (default target/debug/spatialgen-sync) may be any build of this
# version: the output depends only on the command-line definition.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/debug/spatialgen-sync}
out=target/assets
mkdir -p "$out"
"$bin" completions bash > "$out/spatialgen-sync.bash"
"$bin" completions zsh > "$out/_spatialgen-sync"
"$bin" completions fish > "$out/spatialgen-sync.fish"
"$bin" manpage | gzip -9n > "$out/spatialgen-sync.1.gz"
for f in spatialgen-sync.bash _spatialgen-sync spatialgen-sync.fish spatialgen-sync.1.gz; do
  [ -s "$out/$f" ] || { echo "deb-assets: $out/$f is empty" >&2; exit 1; }
done

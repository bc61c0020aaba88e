#!/usr/bin/env bash
# Windows and macOS, proven from this Linux machine (run by .ci/run; runs
# alone too, from the project root):
#   - clippy -D warnings for x86_64-pc-windows-gnu, aarch64-apple-darwin and
#     x86_64-apple-darwin (every target: lib, bins, tests, examples);
#   - the library's unit tests built for Windows and run under Wine (tests
#     with no Windows meaning are gated off with their reason in the code);
#   - the Windows release build, and the .exe's --version, check (a good and
#     a broken config) and demo under Wine.
# Installs what it needs when missing: the rustup targets, Debian's
# gcc-mingw-w64-x86-64 and wine, and zig (PyPI ziglang) as the macOS C
# compiler. Linking a macOS binary needs Apple's SDK, which is not here:
# macOS is linted (type-checked), not linked or run.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$PWD/scripts/cross
t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s)"; }

step "toolchains"
installed=$(rustup target list --installed)
for t in x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
if ! command -v x86_64-w64-mingw32-gcc >/dev/null || ! command -v wine >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64 wine wine64 >/dev/null
fi
if ! command -v python3 >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
if ! python3 -m ziglang version >/dev/null 2>&1; then
  # Debian's own python3 refuses pip installs outside a venv (PEP 668).
  python3 -m pip install --quiet ziglang 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages ziglang
fi
export CC_aarch64_apple_darwin=$here/zig-cc CC_x86_64_apple_darwin=$here/zig-cc

step "clippy: Windows"
cargo clippy --target x86_64-pc-windows-gnu --all-targets --locked -- -D warnings
step "clippy: macOS (Apple silicon)"
cargo clippy --target aarch64-apple-darwin --all-targets --locked -- -D warnings
step "clippy: macOS (Intel)"
cargo clippy --target x86_64-apple-darwin --all-targets --locked -- -D warnings

step "Wine prefix"
WINEPREFIX=$("$here/wine-prefix.sh" "${WINEPREFIX:-$(mktemp -d /tmp/spatialgen-wine.XXXXXX)}")
export WINEPREFIX WINEDEBUG=-all
# Test runs under Wine: no `wineserver` left behind between steps' runs.
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT

step "unit tests under Wine"
# The fleet tests use the PostgreSQL that .ci/run started (over loopback
# TCP: Linux's initdb cannot be run from Windows code); without
# SPATIALGEN_TEST_POSTGRES they fail rather than skip.
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine cargo test --target x86_64-pc-windows-gnu --locked --lib

step "Windows release build"
cargo build --release --locked --target x86_64-pc-windows-gnu
exe=$PWD/target/x86_64-pc-windows-gnu/release/spatialgen-sync.exe

step "the .exe under Wine"
work=$(mktemp -d /tmp/spatialgen-wine-run.XXXXXX)
wine "$exe" --version | tee "$work/version"
grep -q "^spatialgen-sync " "$work/version"
winpath() { printf 'Z:%s' "${1//\//\\}"; }
mkdir -p "$work/drop"
cat > "$work/good.toml" <<TOML
[api]
api_key_env = "SPATIALGEN_API_KEY"
[journal]
path = '$(winpath "$work/journal.sqlite3")'
[[watch]]
path = '$(winpath "$work/drop")'
TOML
SPATIALGEN_API_KEY=wine-check-key wine "$exe" check --config "$(winpath "$work/good.toml")"
printf '[api]\napi_key_env = "SPATIALGEN_API_KEY"\n[[watch]]\npath = 42\n' > "$work/bad.toml"
rc=0
SPATIALGEN_API_KEY=k wine "$exe" check --config "$(winpath "$work/bad.toml")" 2>"$work/bad.err" || rc=$?
cat "$work/bad.err"
[ "$rc" = 2 ] || { echo "a broken config must exit 2 under Windows, got $rc"; exit 1; }
grep -q "bad.toml:4" "$work/bad.err" || { echo "the error must name bad.toml:4"; exit 1; }
(cd "$work" && wine "$exe" demo) | tee "$work/demo.out"
rm -rf "$work"
step "done"

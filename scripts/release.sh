#!/usr/bin/env bash
# Build the release artifacts into target/release-artifacts/ (emptied first):
#   spatialgen-sync_<version>-1_amd64.deb                     the Debian package (as .ci/run builds it)
#   spatialgen-sync-<version>-x86_64-pc-windows-gnu.zip       the .exe, the WinSW service definition,
#                                                             install.ps1, a Windows config.example.toml,
#                                                             INSTALL.txt
#   spatialgen-sync-<version>-<arch>-apple-darwin.tar.gz      on a Mac only: the binary, the launchd plist,
#                                                             a macOS config.example.toml, INSTALL.txt
#   spatialgen-sync-<version>-macos-files.tar.gz              elsewhere: the same without the binary
#                                                             (linking a macOS binary needs Apple's SDK)
#   SHA256SUMS                                                every artifact, checked with sha256sum -c
#
#   scripts/release.sh [--only deb|windows|macos]
#
# Needs the Rust toolchain; for the .deb cargo-deb (installed when missing);
# for the zip the x86_64-pc-windows-gnu target, x86_64-w64-mingw32-gcc and
# python3 or zip. When wine is installed the zipped .exe runs `check` on the
# zipped example config in a Wine prefix laid out as install.ps1 lays out a
# Windows machine (the example's watch folder created on D:); without wine,
# the Linux binary checks the same file (the keys and values; not Windows
# path handling).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
only=all
while [ $# -gt 0 ]; do
  case $1 in
  --only) only=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
  --only=*) only=${1#--only=}; shift ;;
  -h | --help) usage; exit 0 ;;
  *) echo "release: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
case $only in
all | deb | windows | macos) ;;
*) echo "release: --only takes deb, windows or macos, not '$only'" >&2; exit 2 ;;
esac
want() { [ "$only" = all ] || [ "$only" = "$1" ]; }
started=$SECONDS
step() { printf '\n== [%d s] %s\n' "$((SECONDS - started))" "$*"; }
sha256() { if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi; }

version=$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 } p && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
[ -n "$version" ] || { echo "release: no [package] version in Cargo.toml" >&2; exit 1; }
out=target/release-artifacts
work=target/release-work
rm -rf "$out" "$work"
mkdir -p "$out" "$work"
skipped=()

# --- Linux: the .deb -----------------------------------------------------------
if want deb; then
  step "Linux .deb"
  if ! command -v cargo-deb >/dev/null; then
    cargo install cargo-deb --locked --quiet
  fi
  cargo build --release --locked
  # The completions and the man page, from this build's CLI definition.
  BIN=target/release/spatialgen-sync scripts/deb-assets.sh
  deb=$(cargo deb --locked --quiet | tail -n 1)
  [ -f "$deb" ] || { echo "release: cargo deb reported '$deb', which is not a file" >&2; exit 1; }
  if command -v dpkg-deb >/dev/null; then dpkg-deb --info "$deb" >/dev/null; fi
  cp "$deb" "$out/"
fi

# --- Windows: the zip ----------------------------------------------------------
zipdir() { # zipdir ZIP PARENT NAME: ZIP holds PARENT/NAME/ as NAME/
  local zip=$1 parent=$2 name=$3 abs
  abs=$(cd "$(dirname "$zip")" && pwd)/$(basename "$zip")
  if command -v python3 >/dev/null; then
    (cd "$parent" && python3 -m zipfile -c "$abs" "$name")
  elif command -v zip >/dev/null; then
    (cd "$parent" && zip -qrX "$abs" "$name")
  else
    echo "release: the Windows zip needs python3 or zip (apt-get install zip)" >&2
    exit 1
  fi
}

if want windows; then
  step "Windows zip"
  triple=x86_64-pc-windows-gnu
  if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    echo "release: the Rust target $triple is missing: rustup target add $triple" >&2
    exit 1
  fi
  if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    echo "release: x86_64-w64-mingw32-gcc is missing (Debian: apt-get install gcc-mingw-w64-x86-64)" >&2
    exit 1
  fi
  cargo build --release --locked --target "$triple"
  name=spatialgen-sync-$version-$triple
  stage=$work/windows/$name
  mkdir -p "$stage"
  cp "target/$triple/release/spatialgen-sync.exe" "$stage/"
  # The release profile keeps line tables, which mingw's linker stores in the
  # .exe (126 MB); the symbols stay, the DWARF goes (30 MB). cargo deb strips too.
  x86_64-w64-mingw32-strip --strip-debug "$stage/spatialgen-sync.exe"
  cp packaging/windows/spatialgen-sync.xml packaging/windows/install.ps1 "$stage/"
  scripts/platform-config.sh windows >"$stage/config.example.toml"
  sed -e "s/@VERSION@/$version/g" packaging/windows/INSTALL.txt | awk '{ printf "%s\r\n", $0 }' >"$stage/INSTALL.txt"
  zip=$out/$name.zip
  zipdir "$zip" "$work/windows" "$name"

  # Smoke: the zipped .exe checks the zipped config, laid out as install.ps1 would.
  unz=$work/windows-unzipped
  mkdir -p "$unz"
  if command -v python3 >/dev/null; then python3 -m zipfile -e "$zip" "$unz"; else unzip -q "$zip" -d "$unz"; fi
  exe=$unz/$name/spatialgen-sync.exe
  if command -v wine >/dev/null; then
    step "Windows smoke under Wine: spatialgen-sync.exe --version and check on the example config"
    prefix=$(scripts/cross/wine-prefix.sh "$PWD/target/wine-release")
    export WINEPREFIX=$prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
    data=$prefix/drive_c/ProgramData/spatialgen-sync
    rm -rf "$data" "$work/d-drive"
    mkdir -p "$data/logs" "$work/d-drive/Renders/Exports"
    ln -sfn "$PWD/$work/d-drive" "$prefix/dosdevices/d:"
    cp "$unz/$name/config.example.toml" "$data/config.toml"
    printf 'release-smoke-key' >"$data/api-key"
    # What install.ps1's ACL is on Windows: Wine shows a file's Unix mode as
    # its DACL, and the agent refuses a key file Everyone may read.
    chmod 600 "$data/api-key"
    v=$(wine "$exe" --version | tr -d '\r')
    [ "$v" = "spatialgen-sync $version" ] || { echo "release: the .exe says '$v', not 'spatialgen-sync $version'" >&2; exit 1; }
    if ! wine "$exe" check --config 'C:\ProgramData\spatialgen-sync\config.toml' >"$work/wine-check.txt" 2>&1; then
      cat "$work/wine-check.txt" >&2
      echo "release: the Windows example config fails check under Wine" >&2
      exit 1
    fi
    # The relative journal and key file landed in install.ps1's data folder.
    tr -d '\r' <"$work/wine-check.txt" >"$work/wine-check.unix.txt"
    for want in "path = 'C:\\ProgramData\\spatialgen-sync\\journal.sqlite3'" \
      "api_key_file = 'C:\\ProgramData\\spatialgen-sync\\api-key'" "path = 'D:\\Renders\\Exports'"; do
      grep -qxF "$want" "$work/wine-check.unix.txt" || { echo "release: check under Wine does not say $want" >&2; exit 1; }
    done
    head -n 3 "$work/wine-check.unix.txt"
  else
    step "Windows smoke: no wine here; the Linux binary checks the Windows example config"
    cargo build --release --locked
    chk=$work/linux-check
    mkdir -p "$chk/D:\\Renders\\Exports" # on Linux the Windows path is one relative file name
    cp "$unz/$name/config.example.toml" "$chk/config.toml"
    printf 'release-smoke-key' >"$chk/api-key"
    chmod 600 "$chk/api-key"
    if ! target/release/spatialgen-sync check --config "$chk/config.toml" >"$work/linux-check.txt" 2>&1; then
      cat "$work/linux-check.txt" >&2
      echo "release: the Windows example config fails check" >&2
      exit 1
    fi
    head -n 3 "$work/linux-check.txt"
  fi
fi

# --- macOS: the tarball (binary on a Mac only) -----------------------------------
if want macos; then
  step "macOS tarball"
  if [ "$(uname -s)" = Darwin ]; then
    arch=$(uname -m)
    [ "$arch" = arm64 ] && arch=aarch64
    name=spatialgen-sync-$version-$arch-apple-darwin
    cargo build --release --locked
    stage=$work/macos/$name
    mkdir -p "$stage"
    cp target/release/spatialgen-sync "$stage/"
  else
    name=spatialgen-sync-$version-macos-files
    stage=$work/macos/$name
    mkdir -p "$stage"
    skipped+=("macOS binary: linking one needs Apple's SDK (build on a Mac: scripts/release.sh --only macos); $name.tar.gz has the plist, config and notes only")
    echo "The macOS binary is not built here ($(uname -s)): linking it needs Apple's SDK, so build it on a Mac."
    echo "Making $name.tar.gz: the launchd plist, the macOS example config and the install notes, no binary."
  fi
  cp packaging/launchd/com.spatialgen.sync.plist "$stage/"
  scripts/platform-config.sh macos >"$stage/config.example.toml"
  sed -e "s/@VERSION@/$version/g" packaging/launchd/INSTALL.txt >"$stage/INSTALL.txt"
  [ -f "$stage/spatialgen-sync" ] || printf '\nThis tarball holds no binary: it was made on %s, where a macOS binary cannot be linked.\nBuild one on a Mac with `cargo install --locked --path .` (or scripts/release.sh --only macos).\n' "$(uname -s)" >>"$stage/INSTALL.txt"
  tar -C "$work/macos" -czf "$out/$name.tar.gz" "$name"
fi

# --- Sums ----------------------------------------------------------------------------
step "SHA256SUMS"
(
  cd "$out"
  shopt -s nullglob
  files=(*.deb *.zip *.tar.gz)
  [ ${#files[@]} -gt 0 ] || { echo "release: no artifact was built" >&2; exit 1; }
  sha256 "${files[@]}" >SHA256SUMS
  sha256 -c SHA256SUMS
)

step "release artifacts of spatialgen-sync $version in $out/ ($((SECONDS - started)) s)"
while read -r sum file; do
  printf '%10s  %s  %s\n' "$(stat -c %s "$out/$file" 2>/dev/null || stat -f %z "$out/$file")" "$sum" "$file"
done <"$out/SHA256SUMS"
for s in "${skipped[@]}"; do echo "skipped: $s"; done

#!/usr/bin/env bash
# Makes a Wine prefix that runs Rust programs: Wine 8 lacks
# bcryptprimitives.dll (see bcryptprimitives.c). Prints the prefix's path.
#   WINEPREFIX=$(scripts/cross/wine-prefix.sh [DIR])
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=${1:-${WINEPREFIX:-$HOME/.wine-spatialgen}}
export WINEPREFIX=$prefix WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
sys32="$prefix/drive_c/windows/system32"
if [ ! -f "$sys32/bcryptprimitives.dll" ]; then
  wineboot --init >/dev/null 2>&1 || true
  wineserver -w || true
  x86_64-w64-mingw32-gcc -shared -O2 -o "$sys32/bcryptprimitives.dll" "$here/bcryptprimitives.c" -ladvapi32
fi
echo "$prefix"

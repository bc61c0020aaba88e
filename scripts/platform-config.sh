#!/usr/bin/env bash
# Print config.example.toml (every key with its default and comment, the file
# the .deb ships and `check` is tested on) in its Windows or macOS flavour:
# the same keys and comments, with the paths and the words about Unix file
# modes rewritten for that platform. The release artifacts ship the result.
#   scripts/platform-config.sh windows > config.example.toml
#   scripts/platform-config.sh macos   > config.example.toml
# Fails when a Unix path it has no rewrite for is left (config.example.toml
# gained a path line: add its rewrite here).
set -euo pipefail
cd "$(dirname "$0")/.."
platform=${1:?usage: scripts/platform-config.sh windows|macos}
src=config.example.toml

case "$platform" in
windows)
  # Windows paths go in TOML literal strings ('...': backslashes kept).
  # Relative paths are relative to the config file's folder, which install.ps1
  # makes %ProgramData%\spatialgen-sync (or its -DataDir): the journal, the key
  # file install.ps1 writes, and the other private files live there.
  out=$(sed \
    -e '1a\
#\
# Windows flavour (made by scripts/platform-config.sh from the Linux file).\
# install.ps1 copies it to %ProgramData%\\spatialgen-sync\\config.toml; the\
# service runs `spatialgen-sync.exe run --config` on that file. Paths are\
# TOML literal strings ('"'"'...'"'"', backslashes kept as written); a relative\
# path is relative to that folder. UNC paths work: '"'"'\\\\renderfs\\exports'"'"'.' \
    -e 's|^# Validate with:  spatialgen-sync check --config /etc/spatialgen-sync/config.toml$|# Validate with:  spatialgen-sync.exe check --config "%ProgramData%\\spatialgen-sync\\config.toml"|' \
    -e 's|^# (chmod 600)\. When set, it is used instead of api_key_env\.$|# (install.ps1 writes it with an ACL: SYSTEM and the service account read,\n# Administrators write, nothing inherited). When set, it is used instead of\n# api_key_env.|' \
    -e 's|^# api_key_file = "/etc/spatialgen-sync/api-key"$|api_key_file = '"'"'api-key'"'"'|' \
    -e 's|^path = "/var/lib/spatialgen-sync/journal.sqlite3"$|path = '"'"'journal.sqlite3'"'"'|' \
    -e 's|^# On SIGINT/SIGTERM, how long parts in flight may take to finish\.$|# On Ctrl+C (WinSW stopping the service), how long parts in flight may take\n# to finish; keep it well under spatialgen-sync.xml'"'"'s stoptimeout (30 s).|' \
    -e 's|^# receipt_dir = "/var/lib/spatialgen-sync/receipts"$|# receipt_dir = '"'"'receipts'"'"'|' \
    -e 's|^# dir = "/var/log/spatialgen-sync"$|# dir = '"'"'logs'"'"'   (WinSW already keeps the service'"'"'s output there)|' \
    -e 's|^# A file (chmod 600) holding the token|# A file (service account only) holding the token|' \
    -e 's|^# token_file = "/etc/spatialgen-sync/http-token"$|# token_file = '"'"'http-token'"'"'|' \
    -e 's|^# on_complete = \["/usr/local/bin/notify-render-farm", "--done"\]$|# on_complete = ['"'"'C:\\Tools\\notify-render-farm.exe'"'"', "--done"]|' \
    -e 's|^# on_failure = \["/usr/local/bin/page-on-call"\]$|# on_failure = ['"'"'C:\\Tools\\page-on-call.exe'"'"']|' \
    -e 's|^# on_rejected = \["/usr/local/bin/mail-artist"\]$|# on_rejected = ['"'"'C:\\Tools\\mail-artist.exe'"'"']|' \
    -e 's|^# body> with the secret in this file (readable by the agent'"'"'s user only: chmod 600)\.$|# body> with the secret in this file (readable by the service account only).|' \
    -e 's|^# webhook_secret_file = "/etc/spatialgen-sync/webhook-secret"$|# webhook_secret_file = '"'"'webhook-secret'"'"'|' \
    -e 's|^path = "/renders/exports"$|path = '"'"'D:\\Renders\\Exports'"'"'\n# A share on a file server: path = '"'"'\\\\renderfs\\exports'"'"' with poll = "15s"\n# (SMB sends no change events), and a service account that can read it.|' \
    -e 's|^# move_to = "/renders/uploaded"$|# move_to = '"'"'D:\\Renders\\Uploaded'"'"'|' \
    "$src")
  ;;
macos)
  # The layout packaging/launchd/com.spatialgen.sync.plist uses: config and
  # key under /usr/local/etc/spatialgen-sync, logs under /usr/local/var/log.
  out=$(sed \
    -e '1a\
#\
# macOS flavour (made by scripts/platform-config.sh from the Linux file), for\
# /usr/local/etc/spatialgen-sync/config.toml, the file the launchd plist\
# (com.spatialgen.sync.plist) runs `spatialgen-sync run --config` on.' \
    -e 's|/etc/spatialgen-sync/|/usr/local/etc/spatialgen-sync/|g' \
    -e 's|/var/lib/spatialgen-sync/|/usr/local/var/spatialgen-sync/|g' \
    -e 's|"/var/log/spatialgen-sync"|"/usr/local/var/log/spatialgen-sync"|' \
    -e 's|^path = "/renders/exports"$|path = "/Volumes/Renders/Exports"|' \
    -e 's|^# move_to = "/renders/uploaded"$|# move_to = "/Volumes/Renders/Uploaded"|' \
    "$src")
  ;;
*)
  echo "platform-config: unknown platform '$platform' (windows or macos)" >&2
  exit 2
  ;;
esac

if [ "$platform" = windows ]; then
  left=$(grep -nE "[\"'](/|~/)" <<<"$out" || true)
else
  left=$(grep -nE "[\"'](/etc/|/var/|/renders)" <<<"$out" || true)
fi
if [ -n "$left" ]; then
  echo "platform-config: $src has paths with no $platform rewrite (add one to $0):" >&2
  echo "$left" >&2
  exit 1
fi
printf '%s\n' "$out"

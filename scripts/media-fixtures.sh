#!/usr/bin/env bash
# Makes the tiny real containers under tests/fixtures/media/ that the probe's
# unit tests read. Run once by hand when the set changes; the test run itself
# never needs ffmpeg (the files are committed).
#
# The committed files were made with Debian bookworm's ffmpeg 5.1.9
# (`apt-get install -y ffmpeg`: libx264, libx265, prores_ks and the native
# AAC encoder), and the expected facts in src/media/tests.rs were read from
# `ffprobe -show_streams -show_format` on these files.
#
# Usage: scripts/media-fixtures.sh [OUT_DIR]   (default tests/fixtures/media)
set -euo pipefail

out=${1:-"$(dirname "$0")/../tests/fixtures/media"}
mkdir -p "$out"

ff() { ffmpeg -hide_banner -loglevel error -y -bitexact "$@"; }

# 0.5 s of a 64x36 test pattern at 30 fps, and 0.5 s of a 440 Hz tone.
video=(-f lavfi -i "testsrc=size=64x36:rate=30" -t 0.5)
tone=(-f lavfi -i "sine=frequency=440:sample_rate=48000" -t 0.5)

# H.264, moov after mdat (ffmpeg's default), and moov first.
ff "${video[@]}" -c:v libx264 -preset ultrafast -pix_fmt yuv420p "$out/h264_moov_last.mp4"
ff "${video[@]}" -c:v libx264 -preset ultrafast -pix_fmt yuv420p -movflags +faststart "$out/h264_faststart.mp4"

# HEVC (hvc1 sample entry) with an AAC track, moov first.
ff "${video[@]}" "${tone[@]}" -c:v libx265 -preset ultrafast -x265-params log-level=error \
    -tag:v hvc1 -pix_fmt yuv420p -c:a aac -b:a 32k -movflags +faststart "$out/hevc_aac.mp4"

# AAC alone in an .m4a.
ff "${tone[@]}" -c:a aac -b:a 32k "$out/aac.m4a"

# QuickTime: ProRes 422 (apcn) with AAC (a version 1 sound description). A flat
# grey picture: ProRes of the test pattern is ~2 KiB a frame.
ff -f lavfi -i "color=c=gray:size=64x36:rate=30" -t 0.5 "${tone[@]}" -c:v prores_ks -profile:v 2 -c:a aac -b:a 32k "$out/prores_aac.mov"

# QuickTime: 16-bit PCM at 96 kHz, mono, 20 ms (a version 2 sound description:
# the rate does not fit the 16.16 field).
ff -f lavfi -i "sine=frequency=440:sample_rate=96000" -t 0.02 -c:a pcm_s16le "$out/pcm96k.mov"

# Fragmented MP4 (empty moov with mvex, moof/mdat pairs, mfra at the end).
ff -f lavfi -i "testsrc=size=64x36:rate=30" -t 1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p \
    -g 10 -movflags frag_keyframe+empty_moov "$out/h264_fragmented.mp4"

ls -l "$out"

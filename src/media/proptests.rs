//! Properties of the probe over generated files: a file from `synth` says
//! exactly what its spec says; none of its strict prefixes is `Ok` (an
//! encoder's file on disk is never taken for a finished one); random bytes
//! and mutated files never panic, and random bytes are never `Ok`.

use std::io::Cursor;

use proptest::prelude::*;

use super::synth::{self, Spec};
use super::*;

fn probe_bytes(b: &[u8]) -> Result<MediaFacts, MediaError> {
    probe(&mut Cursor::new(b), b.len() as u64)
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    let codec = prop_oneof![Just(*b"hvc1"), Just(*b"hev1"), Just(*b"avc1"), Just(*b"apcn"), Just(*b"mp4a")];
    let fps = prop_oneof![Just((30000, 1001)), Just((24000, 1001)), Just((30, 1)), Just((90, 1)), Just((600, 20))];
    let eye = prop_oneof![Just(Eye::Left), Just(Eye::Right)];
    let projection =
        prop_oneof![Just(Projection::Rect), Just(Projection::Equi), Just(Projection::Hequ), Just(Projection::Fish)];
    let packing = prop_oneof![Just(Packing::Side), Just(Packing::Over)];
    let audio = (1u16..=8, prop_oneof![Just(44100u32), Just(48000), Just(96000)]);
    (
        (codec, 16u32..4096, 16u32..4096, fps, 1u32..40),
        (
            any::<bool>(),
            proptest::option::of(eye),
            proptest::option::of(1u32..100_000),
            proptest::option::of(1u32..180_000),
        ),
        (proptest::option::of(projection), proptest::option::of(packing), proptest::option::of(audio)),
        (0u64..3000, any::<bool>(), any::<bool>(), any::<bool>(), 0u16..=2, any::<bool>()),
    )
        .prop_map(
            |(
                (codec, width, height, fps, frames),
                (stereo, hero, baseline_um, hfov_millideg),
                (projection, packing, audio),
                (payload, moov_first, quicktime, fragmented, sound_version, mdat64),
            )| {
                // An MP4 sound entry cannot say 96 kHz.
                let audio = audio.map(|(c, r)| (c, if quicktime { r } else { r.min(48000) }));
                Spec {
                    codec,
                    width,
                    height,
                    fps,
                    frames,
                    stereo,
                    hero,
                    baseline_um,
                    hfov_millideg,
                    projection,
                    packing,
                    audio,
                    payload,
                    moov_first,
                    quicktime,
                    fragmented,
                    sound_version,
                    mdat64,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn synth_files_say_what_their_spec_says(spec in arb_spec()) {
        let bytes = synth::build(&spec);
        let got = probe_bytes(&bytes);
        prop_assert!(got.is_ok(), "{:?}", got);
        prop_assert_eq!(got.unwrap(), spec.facts());
    }

    #[test]
    fn no_strict_prefix_is_ok(spec in arb_spec()) {
        let bytes = synth::build(&spec);
        for n in 0..bytes.len() {
            match probe_bytes(&bytes[..n]) {
                Err(MediaError::Unfinished(_) | MediaError::Truncated(_)) => {}
                other => prop_assert!(false, "prefix of {} of {} bytes: {:?}", n, bytes.len(), other),
            }
        }
    }

    #[test]
    fn mutated_files_never_panic(
        spec in arb_spec(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..12),
    ) {
        let mut bytes = synth::build(&spec);
        for (at, value, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = value,
                1 => bytes[i] ^= 1 << (value % 8),
                2 => bytes.insert(i, value),
                _ => { bytes.remove(i); }
            }
        }
        let _ = probe_bytes(&bytes);
    }

    #[test]
    fn random_bytes_never_panic_and_are_never_ok(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(probe_bytes(&bytes).is_err());
    }

    /// Random bytes after a plausible header: the walk and the moov parser
    /// see random sizes and types.
    #[test]
    fn random_boxes_never_panic(
        kinds in proptest::collection::vec((0u32..200, prop_oneof![
            Just(*b"moov"), Just(*b"trak"), Just(*b"mdia"), Just(*b"minf"), Just(*b"stbl"), Just(*b"stsd"),
            Just(*b"stsz"), Just(*b"stsc"), Just(*b"stco"), Just(*b"co64"), Just(*b"stts"), Just(*b"mvhd"),
            Just(*b"mdat"), Just(*b"moof"), Just(*b"hdlr"), Just(*b"vexu"), Just(*b"dref"), Just(*b"stz2"),
        ], proptest::collection::vec(any::<u8>(), 0..40)), 1..30),
    ) {
        let mut bytes = synth::boxed(b"ftyp", b"isom\0\0\x02\0isom");
        for (size, kind, tail) in kinds {
            bytes.extend_from_slice(&size.to_be_bytes());
            bytes.extend_from_slice(&kind);
            bytes.extend_from_slice(&tail);
        }
        let _ = probe_bytes(&bytes);
    }
}

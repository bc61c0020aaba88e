//! The probe on synthetic files (every verdict, with the numbers in its
//! message) and on real files made by ffmpeg (`scripts/media-fixtures.sh`).

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use super::synth::{self, Spec, boxed, full_box, header};
use super::*;

fn probe_bytes(b: &[u8]) -> Result<MediaFacts, MediaError> {
    probe(&mut Cursor::new(b), b.len() as u64)
}

/// The verdict's name and message.
fn verdict(r: Result<MediaFacts, MediaError>) -> (&'static str, String) {
    match r {
        Ok(f) => ("ok", format!("{f:?}")),
        Err(MediaError::Unfinished(m)) => ("unfinished", m),
        Err(MediaError::Truncated(m)) => ("truncated", m),
        Err(MediaError::Unreadable(m)) => ("unreadable", m),
        Err(MediaError::Io(e)) => ("io", e.to_string()),
    }
}

fn assert_verdict(b: &[u8], kind: &str, message: &str) {
    let (k, m) = verdict(probe_bytes(b));
    assert_eq!((k, m.as_str()), (kind, message));
}

/// The offset of the first `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| panic!("{needle:?} not found"))
}

fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// 10 avc1 frames of 1,000 bytes in one chunk, MP4, moov last.
fn small() -> Spec {
    Spec { payload: 10_000, ..Spec::video(*b"avc1", 320, 240, (30, 1), 10) }
}

const FTYP_MP4: usize = 28;

// ---- synthetic files: facts ----

#[test]
fn plain_video_facts() {
    let facts = probe_bytes(&synth::build(&small())).unwrap();
    assert_eq!(
        facts,
        MediaFacts {
            container: Container::Mp4,
            duration_ms: Some(333),
            width: Some(320),
            height: Some(240),
            frame_rate: Some(30.0),
            codec: Some("avc1".into()),
            views: Some(1),
            hero_eye: None,
            baseline_mm: None,
            hfov_deg: None,
            projection: None,
            packing: None,
            audio_channels: None,
            sample_rate: None,
        }
    );
    assert_eq!(facts, small().facts());
}

#[test]
fn frame_rates_round_to_three_decimals() {
    for (fps, frames, rate, ms) in [
        ((30000, 1001), 300, 29.97, 10_010),
        ((24000, 1001), 48, 23.976, 2002),
        ((90, 1), 90, 90.0, 1000),
        ((90000, 1500), 60, 60.0, 1000),
        ((600, 25), 24, 24.0, 1000),
    ] {
        let spec = Spec::video(*b"hvc1", 1920, 1080, fps, frames);
        let facts = probe_bytes(&synth::build(&spec)).unwrap();
        assert_eq!((facts.frame_rate, facts.duration_ms), (Some(rate), Some(ms)), "{fps:?}");
        assert_eq!(facts, spec.facts());
    }
}

#[test]
fn moov_first_and_moov_last_say_the_same() {
    let last = Spec { audio: Some((2, 48000)), ..small() };
    let first = Spec { moov_first: true, ..last.clone() };
    let (a, b) = (synth::build(&last), synth::build(&first));
    assert_eq!(a.len(), b.len());
    assert_eq!(&a[4..8], b"ftyp");
    assert_eq!(&b[FTYP_MP4 + 4..FTYP_MP4 + 8], b"moov");
    assert_eq!(&a[FTYP_MP4 + 4..FTYP_MP4 + 8], b"mdat");
    assert_eq!(probe_bytes(&a).unwrap(), last.facts());
    assert_eq!(probe_bytes(&b).unwrap(), last.facts());
    assert_eq!(last.facts().audio_channels, Some(2));
    assert_eq!(last.facts().sample_rate, Some(48000));
}

#[test]
fn stereo_facts() {
    let spec = Spec::stereo(2200, 2200, (30, 1), 30);
    let bytes = synth::build(&spec);
    for b in [&b"lhvC"[..], b"vexu", b"eyes", b"stri", b"hero", b"cams", b"blin", b"hfov"] {
        find(&bytes, b);
    }
    let facts = probe_bytes(&bytes).unwrap();
    assert_eq!(facts.container, Container::Quicktime);
    assert_eq!(facts.codec.as_deref(), Some("hvc1"));
    assert_eq!(facts.views, Some(2));
    assert_eq!(facts.hero_eye, Some(Eye::Left));
    assert_eq!(facts.baseline_mm, Some(64.0));
    assert_eq!(facts.hfov_deg, Some(63.4));
    assert_eq!((facts.width, facts.height), (Some(2200), Some(2200)));
    assert_eq!(facts.projection, None);
    assert_eq!(facts, spec.facts());

    // hvcC alone is one view; so is an lhvC on a codec that is not HEVC.
    let mono = Spec { stereo: false, ..spec.clone() };
    assert_eq!(probe_bytes(&synth::build(&mono)).unwrap().views, Some(1));
    let avc = Spec { codec: *b"avc1", ..spec.clone() };
    assert_eq!(probe_bytes(&synth::build(&avc)).unwrap().views, Some(1));

    let right = Spec { hero: Some(Eye::Right), baseline_um: Some(19_240), hfov_millideg: Some(90_000), ..spec };
    let facts = probe_bytes(&synth::build(&right)).unwrap();
    assert_eq!((facts.hero_eye, facts.baseline_mm, facts.hfov_deg), (Some(Eye::Right), Some(19.24), Some(90.0)));
}

#[test]
fn projection_and_packing_facts() {
    for (projection, packing) in [
        (Projection::Rect, Packing::Side),
        (Projection::Equi, Packing::Over),
        (Projection::Hequ, Packing::Side),
        (Projection::Fish, Packing::Over),
    ] {
        let spec = Spec {
            projection: Some(projection),
            packing: Some(packing),
            hero: None,
            baseline_um: None,
            hfov_millideg: None,
            stereo: false,
            ..Spec::stereo(3840, 1920, (60, 1), 12)
        };
        let bytes = synth::build(&spec);
        find(&bytes, b"prji");
        find(&bytes, b"pkin");
        let facts = probe_bytes(&bytes).unwrap();
        assert_eq!((facts.projection, facts.packing), (Some(projection), Some(packing)));
        assert_eq!((facts.hero_eye, facts.baseline_mm, facts.views), (None, None, Some(1)));
        assert_eq!(facts, spec.facts());
    }
}

#[test]
fn audio_only_m4a_facts() {
    let spec = Spec::audio_only(2, 44100, 43);
    let bytes = synth::build(&spec);
    assert_eq!(&bytes[8..12], b"M4A ");
    let facts = probe_bytes(&bytes).unwrap();
    assert_eq!(
        facts,
        MediaFacts {
            container: Container::Mp4,
            // 43 × 1024 samples at 44.1 kHz: 998.4 ms.
            duration_ms: Some(998),
            width: None,
            height: None,
            frame_rate: None,
            codec: Some("mp4a".into()),
            views: None,
            hero_eye: None,
            baseline_mm: None,
            hfov_deg: None,
            projection: None,
            packing: None,
            audio_channels: Some(2),
            sample_rate: Some(44100),
        }
    );
}

#[test]
fn aac_channels_come_from_esds() {
    // An MP4 writer may leave the entry's channel count at its template
    // value of 2 (ffmpeg does); the AudioSpecificConfig says 1.
    for (channels, quicktime, version) in [(1, false, 0), (6, true, 1), (8, true, 2), (1, true, 1)] {
        let spec = Spec { quicktime, sound_version: version, ..Spec::audio_only(channels, 48000, 10) };
        let mut b = synth::build(&spec);
        let entry = find(&b, b"mp4a") + 4;
        if version < 2 {
            b[entry + 16..entry + 18].copy_from_slice(&2u16.to_be_bytes());
        } else {
            set_u32(&mut b, entry + 40, 2);
        }
        assert_eq!(probe_bytes(&b).unwrap().audio_channels, Some(u32::from(channels)), "{channels} {version}");
    }
    // Seven channels have no configuration code: the entry's count stands.
    let spec = Spec::audio_only(7, 48000, 10);
    assert_eq!(probe_bytes(&synth::build(&spec)).unwrap().audio_channels, Some(7));
}

#[test]
fn quicktime_sound_descriptions_v0_v1_v2() {
    for (version, channels, rate) in [(0, 2, 48000), (1, 1, 44100), (2, 6, 48000), (0, 2, 96000), (1, 8, 192_000)] {
        let spec = Spec {
            audio: Some((channels, rate)),
            quicktime: true,
            sound_version: version,
            ..Spec::video(*b"apcn", 1280, 720, (25, 1), 25)
        };
        let bytes = synth::build(&spec);
        let entry = find(&bytes, b"mp4a") + 4;
        // The version field of the sound description: rates over 65,535 Hz
        // need version 2.
        let written = u16::from_be_bytes([bytes[entry + 8], bytes[entry + 9]]);
        assert_eq!(written, if rate > 0xffff { 2 } else { version });
        let facts = probe_bytes(&bytes).unwrap();
        assert_eq!((facts.audio_channels, facts.sample_rate), (Some(u32::from(channels)), Some(rate)));
        assert_eq!((facts.codec.as_deref(), facts.container), (Some("apcn"), Container::Quicktime));
        assert_eq!(facts, spec.facts());
    }
}

#[test]
fn no_ftyp_is_quicktime() {
    let mut bytes = synth::build(&small());
    // The ftyp turned into a free box of the same size: offsets stay right.
    bytes[4..8].copy_from_slice(b"free");
    let facts = probe_bytes(&bytes).unwrap();
    assert_eq!(facts.container, Container::Quicktime);
    assert_eq!(facts.codec.as_deref(), Some("avc1"));
}

#[test]
fn sixty_four_bit_sizes() {
    let spec = Spec { mdat64: true, ..small() };
    let bytes = synth::build(&spec);
    assert_eq!(get_u32(&bytes, FTYP_MP4), 1);
    assert_eq!(&bytes[FTYP_MP4 + 4..FTYP_MP4 + 8], b"mdat");
    assert_eq!(probe_bytes(&bytes).unwrap(), spec.facts());

    // A 64-bit moov and free box too.
    let plain = synth::build(&small());
    let moov_at = find(&plain, b"moov") - 4;
    let moov = &plain[moov_at + 8..];
    let mut b = plain[..moov_at].to_vec();
    b.extend_from_slice(&synth::boxed64(b"moov", moov));
    // The moov moved by nothing: offsets still point into the mdat.
    assert_eq!(probe_bytes(&b).unwrap(), small().facts());
    b.extend_from_slice(&synth::boxed64(b"free", &[0; 3]));
    assert_eq!(probe_bytes(&b).unwrap(), small().facts());

    // A 64-bit mdat declaring 5 GiB, no moov yet.
    let mut open = boxed(b"ftyp", b"isom\0\0\x02\0isom");
    open.extend_from_slice(&header(b"mdat", 5 << 30));
    open.extend_from_slice(&[0x55; 4000]);
    assert_verdict(&open, "unfinished", "moov missing; mdat declares 5.0 GiB from byte 20, the file ends at 3.9 KiB");
}

#[test]
fn mdat_to_the_end_of_the_file_after_moov() {
    // moov first, then an mdat of size 0: it runs to the end of the file.
    let spec = Spec { moov_first: true, ..small() };
    let mut b = synth::build(&spec);
    let mdat = find(&b, b"mdat") - 4;
    set_u32(&mut b, mdat, 0);
    assert_eq!(probe_bytes(&b).unwrap(), spec.facts());
    // Cut short, its samples are past the end.
    let (k, m) = verdict(probe_bytes(&b[..b.len() - 1]));
    assert_eq!(k, "truncated");
    assert!(m.starts_with("track 1 (vide): sample 10 of 10 lies at bytes "), "{m}");
}

#[test]
fn compact_sample_sizes() {
    // The stsz of `small()` (10 sizes of 1,000) as an stz2 with 16-bit
    // fields plus a free box, so no parent changes size.
    let mut b = synth::build(&small());
    let stsz = find(&b, b"stsz") - 4;
    assert_eq!(get_u32(&b, stsz), 60);
    let mut stz2 = vec![0, 0, 0, 16];
    stz2.extend_from_slice(&10u32.to_be_bytes());
    for _ in 0..10 {
        stz2.extend_from_slice(&1000u16.to_be_bytes());
    }
    let replacement = [full_box(b"stz2", 0, 0, &stz2), boxed(b"free", &[0; 12])].concat();
    assert_eq!(replacement.len(), 60);
    b[stsz..stsz + 60].copy_from_slice(&replacement);
    assert_eq!(probe_bytes(&b).unwrap(), small().facts());
    // 4-bit fields cannot hold 1,000: the sizes read are smaller, and all
    // inside the file.
    let mut four = vec![0, 0, 0, 4];
    four.extend_from_slice(&10u32.to_be_bytes());
    four.extend_from_slice(&[0xff; 5]);
    let replacement = [full_box(b"stz2", 0, 0, &four), boxed(b"free", &[0; 27])].concat();
    assert_eq!(replacement.len(), 60);
    b[stsz..stsz + 60].copy_from_slice(&replacement);
    assert!(probe_bytes(&b).is_ok());
    // A field size of 5 bits is not one.
    b[stsz + 15] = 5;
    assert_verdict(
        &b,
        "unreadable",
        "moov/trak[1]/mdia/minf/stbl/stz2 has a field size of 5 bits (4, 8 or 16 expected)",
    );
}

#[test]
fn version_1_headers_and_tkhd_dimensions() {
    // A moov written by hand: mvhd, tkhd and mdhd in version 1 (64-bit
    // times), a visual sample entry whose width and height are 0 (tkhd's
    // 16.16 values stand in), a second video track that does not count.
    let mut mvhd = vec![0u8; 16];
    mvhd.extend_from_slice(&600u32.to_be_bytes());
    mvhd.extend_from_slice(&1_200u64.to_be_bytes());
    mvhd.extend_from_slice(&[0; 80]);
    let mut tkhd = vec![0u8; 16];
    tkhd.extend_from_slice(&1u32.to_be_bytes());
    tkhd.extend_from_slice(&[0; 4 + 8 + 8 + 8 + 36]);
    tkhd.extend_from_slice(&(1280u32 << 16).to_be_bytes());
    tkhd.extend_from_slice(&(720u32 << 16).to_be_bytes());
    let mut mdhd = vec![0u8; 16];
    mdhd.extend_from_slice(&90_000u32.to_be_bytes());
    mdhd.extend_from_slice(&180_000u64.to_be_bytes());
    mdhd.extend_from_slice(&[0; 4]);
    let mut hdlr = vec![0u8; 4];
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 13]);
    let mut entry = vec![0u8; 6];
    entry.extend_from_slice(&1u16.to_be_bytes());
    entry.extend_from_slice(&[0; 70]);
    let mut stsd = 1u32.to_be_bytes().to_vec();
    stsd.extend_from_slice(&boxed(b"avc1", &entry));
    let stts = [1u32.to_be_bytes(), 120u32.to_be_bytes(), 1500u32.to_be_bytes()].concat();
    let stbl = [
        full_box(b"stsd", 0, 0, &stsd),
        full_box(b"stts", 0, 0, &stts),
        full_box(b"stsc", 0, 0, &0u32.to_be_bytes()),
        full_box(b"stsz", 0, 0, &[0; 8]),
        full_box(b"stco", 0, 0, &0u32.to_be_bytes()),
    ]
    .concat();
    let mdia = [full_box(b"mdhd", 1, 0, &mdhd), full_box(b"hdlr", 0, 0, &hdlr), boxed(b"minf", &boxed(b"stbl", &stbl))]
        .concat();
    let trak = boxed(b"trak", &[full_box(b"tkhd", 1, 3, &tkhd), boxed(b"mdia", &mdia)].concat());
    let moov = boxed(b"moov", &[full_box(b"mvhd", 1, 0, &mvhd), trak.clone(), trak].concat());
    let file = [boxed(b"ftyp", b"isom\0\0\x02\0isom"), moov].concat();
    let facts = probe_bytes(&file).unwrap();
    assert_eq!((facts.width, facts.height), (Some(1280), Some(720)));
    assert_eq!(facts.duration_ms, Some(2000));
    assert_eq!(facts.frame_rate, Some(60.0));
    assert_eq!((facts.codec.as_deref(), facts.views), (Some("avc1"), Some(1)));
}

#[test]
fn uuid_and_other_top_level_boxes_are_skipped() {
    let plain = synth::build(&small());
    let mut b = plain[..FTYP_MP4].to_vec();
    let mut uuid = vec![0xab; 16];
    uuid.extend_from_slice(b"payload");
    b.extend_from_slice(&boxed(b"uuid", &uuid));
    b.extend_from_slice(&boxed(b"wide", &[]));
    b.extend_from_slice(&boxed(b"junk", b"odd top-level box"));
    let shift = b.len() - FTYP_MP4;
    // The same file with boxes inserted after ftyp: shift the chunk offsets.
    let mut rest = plain[FTYP_MP4..].to_vec();
    let stco = find(&rest, b"stco") + 4;
    let n = get_u32(&rest, stco + 4) as usize;
    for i in 0..n {
        let at = stco + 8 + 4 * i;
        let v = get_u32(&rest, at);
        set_u32(&mut rest, at, v + shift as u32);
    }
    b.extend_from_slice(&rest);
    assert_eq!(probe_bytes(&b).unwrap(), small().facts());
}

// ---- verdicts ----

#[test]
fn empty_and_tiny_files() {
    assert_verdict(b"", "unfinished", "the file is empty");
    assert_verdict(b"\0\0\x01\0mda", "unfinished", "the file ends inside the first box header (7 of 8 bytes)");
    assert_verdict(b"\0\0", "unfinished", "the file ends inside the first box header (2 of 8 bytes)");
    assert_verdict(b"hello", "unreadable", "not an ISO-BMFF/QuickTime file: its 5 bytes cannot begin a box header");
    assert_verdict(
        b"\0\0\0\x20xy",
        "unreadable",
        "not an ISO-BMFF/QuickTime file: its 6 bytes cannot begin a box header",
    );
}

#[test]
fn not_a_container() {
    assert_verdict(
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
        "unreadable",
        "not an ISO-BMFF/QuickTime file: the first box type is 39 61 01 00 in hex, not a top-level box",
    );
    assert_verdict(
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        "unreadable",
        "not an ISO-BMFF/QuickTime file: the first box type is 24 00 00 00 in hex, not a top-level box",
    );
    assert_verdict(
        b"\x00\x00\x00\x04ftypisom",
        "unreadable",
        "not an ISO-BMFF/QuickTime file: the first box (ftyp declares 4 bytes, less than its 8-byte header)",
    );
    assert_verdict(
        b"\x00\x00\x00\x18textisom0000",
        "unreadable",
        "not an ISO-BMFF/QuickTime file: the first box type is \"text\", not a top-level box",
    );
}

#[test]
fn random_bytes_are_unreadable() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut unreadable = 0;
    let runs = 5000;
    for _ in 0..runs {
        let len = 8 + (next() % 2000) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let (k, _) = verdict(probe_bytes(&bytes));
        assert_ne!(k, "ok");
        unreadable += usize::from(k == "unreadable");
    }
    assert!(unreadable >= runs * 999 / 1000, "{unreadable} of {runs}");
}

#[test]
fn open_mdat_without_moov() {
    // What a moov-last writer has on disk: ftyp, then an mdat of size 0
    // (to be patched at the end) growing.
    let mut b = boxed(b"ftyp", b"qt  \x20\x05\x03\0qt  ");
    b.extend_from_slice(&header(b"wide", 8));
    b.extend_from_slice(&header(b"mdat", 0));
    b.extend_from_slice(&vec![7; 300_000]);
    assert_verdict(
        &b,
        "unfinished",
        "moov missing; mdat is open (size 0) from byte 28 to the end of the file at 293.0 KiB",
    );
    assert_eq!(probe_bytes(&b).unwrap_err().rule(), Some("media-truncated"));
}

#[test]
fn box_past_the_end_without_moov() {
    let mut b = boxed(b"ftyp", b"isom\0\0\x02\0isom");
    b.extend_from_slice(&header(b"free", 8));
    b.extend_from_slice(&header(b"mdat", 1_500_000_000));
    b.extend_from_slice(&vec![7; 3 << 20]);
    assert_verdict(&b, "unfinished", "moov missing; mdat declares 1.4 GiB from byte 28, the file ends at 3.0 MiB");
}

#[test]
fn boxes_that_tile_without_moov() {
    let mut b = boxed(b"ftyp", b"isom\0\0\x02\0isom");
    b.extend_from_slice(&boxed(b"mdat", &[1; 1000]));
    assert_verdict(
        &b,
        "unfinished",
        "moov missing; 2 top-level boxes end exactly at the end of the file (1.0 KiB), the last: mdat of 1008 B from byte 20",
    );
    let only = boxed(b"free", &[0; 100]);
    assert_verdict(
        &only,
        "unfinished",
        "moov missing; 1 top-level box ends exactly at the end of the file (108 B), the last: free of 108 B from byte 0",
    );
}

#[test]
fn moov_being_written_is_unfinished() {
    let full = synth::build(&small());
    let moov_at = find(&full, b"moov") - 4;
    let cut = &full[..moov_at + 100];
    let moov_size = full.len() - moov_at;
    assert_verdict(
        cut,
        "unfinished",
        &format!(
            "moov incomplete: it declares {} from byte 10,036, the file ends at 9.9 KiB",
            text::size(moov_size as u64)
        ),
    );
}

#[test]
fn mdat_past_the_end_after_moov_is_truncated() {
    let spec = Spec { moov_first: true, ..small() };
    let full = synth::build(&spec);
    let mdat_at = find(&full, b"mdat") - 4;
    let cut = &full[..full.len() - 500];
    assert_verdict(
        cut,
        "truncated",
        &format!(
            "mdat of 9.8 KiB at byte {} runs past the end of the file ({})",
            text::num(mdat_at as u64),
            text::size(cut.len() as u64)
        ),
    );
}

#[test]
fn samples_past_the_end() {
    // ftyp, a shorter mdat, then the moov of the full file: the tiling is
    // exact but the last samples lie past the end.
    let full = synth::build(&small());
    let moov_at = find(&full, b"moov") - 4;
    let moov = &full[moov_at..];
    let k = moov.len() + 100;
    let mut b = full[..FTYP_MP4].to_vec();
    b.extend_from_slice(&boxed(b"mdat", &full[FTYP_MP4 + 8..moov_at - k]));
    b.extend_from_slice(moov);
    assert_eq!(b.len(), FTYP_MP4 + 8 + 9_900);
    assert_verdict(
        &b,
        "truncated",
        "track 1 (vide): sample 10 of 10 lies at bytes 9,036–10,036, the file ends at 9.7 KiB",
    );
}

#[test]
fn garbage_after_the_boxes_is_truncated() {
    let full = synth::build(&small());
    let n = full.len();
    let mut junk = full.clone();
    junk.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0, 0]);
    assert_verdict(
        &junk,
        "truncated",
        &format!(
            "the boxes stop tiling the file at byte {}: the header there is not a box header (its type is not text (01 02 03 04))",
            text::num(n as u64)
        ),
    );
    let mut small_size = full.clone();
    small_size.extend_from_slice(b"\0\0\0\x03free");
    assert_verdict(
        &small_size,
        "truncated",
        &format!(
            "the boxes stop tiling the file at byte {}: the header there is not a box header (free declares 3 bytes, less than its 8-byte header)",
            text::num(n as u64)
        ),
    );
    let mut zeros = full.clone();
    zeros.extend_from_slice(&[0; 4096]);
    assert_eq!(verdict(probe_bytes(&zeros)).0, "truncated");
    let mut stub = full.clone();
    stub.extend_from_slice(b"\0\0\x01");
    assert_verdict(
        &stub,
        "truncated",
        &format!("the file ends 3 bytes into a box header at byte {}", text::num(n as u64)),
    );

    // Garbage before any moov: still a file being written.
    let mut early = full[..FTYP_MP4].to_vec();
    early.extend_from_slice(&[0xff; 64]);
    assert_verdict(
        &early,
        "unfinished",
        "moov missing; the boxes stop tiling the file at byte 28: the header there is not a box header (its type is not text (ff ff ff ff))",
    );
}

#[test]
fn fragmented_files() {
    let spec = Spec { fragmented: true, audio: Some((2, 48000)), ..Spec::video(*b"hvc1", 640, 360, (30000, 1001), 45) };
    let bytes = synth::build(&spec);
    let facts = probe_bytes(&bytes).unwrap();
    assert_eq!(facts, spec.facts());
    assert_eq!((facts.duration_ms, facts.frame_rate), (Some(1502), Some(29.97)));

    // Mid-write: the last fragment's mdat cut short.
    let mfra = bytes.len() - 24;
    let last_mdat_end = mfra;
    let cut = &bytes[..last_mdat_end - 10];
    let (k, m) = verdict(probe_bytes(cut));
    assert_eq!(k, "unfinished");
    assert!(m.starts_with("fragmented movie still being written: mdat of "), "{m}");
    assert!(m.ends_with(&format!("runs past the end of the file ({})", text::size(cut.len() as u64))), "{m}");

    // Every fragment complete but no mfra yet.
    assert_verdict(
        &bytes[..mfra],
        "unfinished",
        &format!(
            "fragmented movie with 5 fragments and no mfra index after them, so its writer may still add fragments; \
             the file ends at {}",
            text::size(mfra as u64)
        ),
    );

    // The init segment alone.
    let first_moof = find(&bytes, b"moof") - 4;
    assert_verdict(
        &bytes[..first_moof],
        "unfinished",
        &format!(
            "fragmented movie (moov has mvex) with no fragment yet; the file ends at {}",
            text::size(first_moof as u64)
        ),
    );

    // Fragments without their moov: a media segment.
    let moov_at = find(&bytes, b"moov") - 4;
    let mut segment = bytes[..moov_at].to_vec();
    segment.extend_from_slice(&bytes[first_moof..]);
    assert_verdict(
        &segment,
        "unreadable",
        &format!("moof at byte {} but no moov: a media segment without its movie", text::num(moov_at as u64)),
    );
}

#[test]
fn moov_over_the_cap_is_not_read() {
    let mut b = boxed(b"ftyp", b"isom\0\0\x02\0isom");
    b.extend_from_slice(&header(b"moov", 300 << 20));
    b.extend_from_slice(&[0; 64]);
    assert_verdict(&b, "unreadable", "moov is 300.0 MiB, more than the 64.0 MiB the probe reads (at byte 20)");
    assert_eq!(probe_bytes(&b).unwrap_err().rule(), Some("media-unreadable"));
    // Even when the file is as long as the header says (a reader that
    // serves zeros past its bytes).
    let len = 20 + (300u64 << 20);
    let mut r = Zeros { head: b, pos: 0, len, read_bytes: 0 };
    let (k, _) = verdict(probe(&mut r, len));
    assert_eq!(k, "unreadable");
    assert!(r.read_bytes < 100, "read {} bytes", r.read_bytes);
}

#[test]
fn two_moovs() {
    let full = synth::build(&small());
    let moov_at = find(&full, b"moov") - 4;
    let mut b = full.clone();
    b.extend_from_slice(&full[moov_at..]);
    assert_verdict(
        &b,
        "unreadable",
        &format!("two moov boxes, at byte {} and at byte {}", text::num(moov_at as u64), text::num(full.len() as u64)),
    );
}

#[test]
fn reference_movie() {
    let spec = Spec { quicktime: true, ..small() };
    let mut b = synth::build(&spec);
    assert!(probe_bytes(&b).is_ok());
    let alis = find(&b, b"alis");
    // Clear the self-contained flag.
    b[alis + 7] = 0;
    assert_verdict(
        &b,
        "unreadable",
        "track 1 (vide): its media lives in another file (data reference 1 is alis without the self-contained flag): \
         a reference movie",
    );
}

#[test]
fn broken_moov_structure() {
    let full = synth::build(&small());
    // stsz claiming 100 bytes more than its stbl has.
    let mut b = full.clone();
    let stsz = find(&b, b"stsz") - 4;
    let stbl = find(&b, b"stbl") - 4;
    let stbl_end = stbl + get_u32(&b, stbl) as usize;
    let declared = get_u32(&b, stsz) as usize;
    set_u32(&mut b, stsz, (declared + 100) as u32);
    assert_verdict(
        &b,
        "unreadable",
        &format!(
            "moov/trak[1]/mdia/minf/stbl: stsz at byte {} declares {} B, {} B past the end of stbl",
            text::num(stsz as u64),
            declared + 100,
            stsz + declared + 100 - stbl_end
        ),
    );

    // A trak declaring less than its header.
    let mut b = full.clone();
    let trak = find(&b, b"trak") - 4;
    set_u32(&mut b, trak, 5);
    assert_verdict(
        &b,
        "unreadable",
        &format!("moov: trak at byte {} declares 5 bytes, less than its 8-byte header", text::num(trak as u64)),
    );

    // stsz claiming 2^32 - 1 entries.
    let mut b = full.clone();
    set_u32(&mut b, stsz + 16, u32::MAX);
    assert_verdict(
        &b,
        "unreadable",
        "moov/trak[1]/mdia/minf/stbl/stsz declares 4,294,967,295 entries (16.0 GiB), the box holds 40 B",
    );

    // stsc starting at chunk 0.
    let mut b = full.clone();
    let stsc = find(&b, b"stsc") + 4;
    set_u32(&mut b, stsc + 8, 0);
    assert_verdict(
        &b,
        "unreadable",
        "moov/trak[1]/mdia/minf/stbl: stsc entry 1 starts at chunk 0 (chunks count from 1)",
    );

    // stsc starting past the last chunk.
    let mut b = full.clone();
    set_u32(&mut b, stsc + 8, 7);
    assert_verdict(
        &b,
        "unreadable",
        "moov/trak[1]/mdia/minf/stbl: stsc entry 1 starts at chunk 7, the track has 1 chunks",
    );

    // stsc placing more samples than stsz lists.
    let mut b = full.clone();
    set_u32(&mut b, stsc + 12, 11);
    assert_verdict(&b, "unreadable", "moov/trak[1]/mdia/minf/stbl: chunk 1 would hold samples 1–11, stsz lists 10");

    // No mvhd.
    let mut b = full.clone();
    let mvhd = find(&b, b"mvhd");
    b[mvhd..mvhd + 4].copy_from_slice(b"xxxx");
    assert_verdict(&b, "unreadable", "moov has no mvhd (movie header)");
}

#[test]
fn overflowing_chunk_offsets_are_unreadable() {
    // 10 frames of 500 MiB: a co64 table, whose one chunk offset is then
    // pushed near u64::MAX.
    let spec = Spec { payload: 5000 << 20, ..small() };
    let parts = synth::parts(&spec);
    let mut b = parts.head.clone();
    let co64 = find(&parts.tail, b"co64") + 4;
    let mut tail = parts.tail.clone();
    tail[co64 + 8..co64 + 16].copy_from_slice(&(u64::MAX - 5).to_be_bytes());
    // Fake the payload's length with a reader that serves zeros.
    let len = b.len() as u64 + parts.payload + tail.len() as u64;
    let mut r = Sparse { head: std::mem::take(&mut b), gap: parts.payload, tail, pos: 0 };
    let (k, m) = verdict(probe(&mut r, len));
    assert_eq!(
        (k, m.as_str()),
        (
            "unreadable",
            "moov/trak[1]/mdia/minf/stbl: chunk 1 at byte 18,446,744,073,709,551,610 holds more bytes than a 64-bit \
             offset can reach"
        )
    );
}

#[test]
fn reads_headers_and_the_moov_only() {
    struct Counted<'a> {
        inner: Cursor<&'a [u8]>,
        bytes: u64,
        reads: u64,
    }
    impl Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.bytes += n as u64;
            self.reads += 1;
            Ok(n)
        }
    }
    impl Seek for Counted<'_> {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }
    for moov_first in [false, true] {
        let spec = Spec { payload: 1 << 20, moov_first, mdat64: true, ..small() };
        let b = synth::build(&spec);
        let moov_len = get_u32(&b, find(&b, b"moov") - 4) as u64;
        let mut r = Counted { inner: Cursor::new(&b[..]), bytes: 0, reads: 0 };
        assert_eq!(probe(&mut r, b.len() as u64).unwrap(), spec.facts());
        // ftyp header and brand, mdat header (16 bytes: two reads), moov
        // header and payload.
        assert_eq!((r.bytes, r.reads), (8 + 4 + 16 + moov_len, 6), "moov first: {moov_first}");
    }
}

#[test]
fn read_errors_are_io() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
    }
    impl Seek for Failing {
        fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
            Ok(0)
        }
    }
    let err = probe(&mut Failing, 1000).unwrap_err();
    assert!(matches!(err, MediaError::Io(_)));
    assert_eq!(err.rule(), None);
    assert_eq!(err.to_string(), "read error: disk on fire");
}

#[test]
fn a_reader_shorter_than_len() {
    // The file ended before the length the caller had: what the probe
    // reads is judged on what is there (what it seeks over, it cannot
    // see).
    let moov_last = synth::build(&small());
    let (k, _) = verdict(probe(&mut Cursor::new(&moov_last[..moov_last.len() - 1]), moov_last.len() as u64));
    assert_eq!(k, "unfinished");
}

#[test]
fn write_to_streams_the_same_bytes() {
    let spec = Spec { payload: 200_003, audio: Some((2, 48000)), ..Spec::stereo(640, 480, (24, 1), 37) };
    let mut streamed = Vec::new();
    let n = synth::write_to(&spec, &mut streamed).unwrap();
    assert_eq!(n, streamed.len() as u64);
    assert_eq!(streamed, synth::build(&spec));
    let p = synth::parts(&spec);
    assert_eq!(p.payload, 200_003);
    assert_eq!(p.head.len() + p.tail.len() + 200_003, streamed.len());
    assert_eq!(&streamed[..p.head.len()], &p.head[..]);
    assert_eq!(&streamed[streamed.len() - p.tail.len()..], &p.tail[..]);
}

#[test]
fn full_box_and_headers() {
    assert_eq!(full_box(b"hero", 0, 0, &[1]), b"\0\0\0\x0dhero\0\0\0\0\x01");
    assert_eq!(header(b"mdat", 0), b"\0\0\0\0mdat");
    assert_eq!(header(b"mdat", 1 << 32), b"\0\0\0\x01mdat\0\0\0\x01\0\0\0\0");
    assert_eq!(synth::boxed64(b"free", &[]), b"\0\0\0\x01free\0\0\0\0\0\0\0\x10");
}

/// A reader over `head` and then zeros up to `len`.
struct Zeros {
    head: Vec<u8>,
    pos: u64,
    len: u64,
    read_bytes: u64,
}

impl Read for Zeros {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = self.head.get(self.pos as usize + i).copied().unwrap_or(0);
        }
        self.pos += n as u64;
        self.read_bytes += n as u64;
        Ok(n)
    }
}

impl Seek for Zeros {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Start(p) = to else { unreachable!("the probe seeks from the start") };
        self.pos = p;
        Ok(p)
    }
}

/// `head`, `gap` zero bytes, `tail`.
struct Sparse {
    head: Vec<u8>,
    gap: u64,
    tail: Vec<u8>,
    pos: u64,
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (h, g) = (self.head.len() as u64, self.gap);
        let len = h + g + self.tail.len() as u64;
        let n = len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = if p < h {
                self.head[p as usize]
            } else if p < h + g {
                0
            } else {
                self.tail[(p - h - g) as usize]
            };
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let SeekFrom::Start(p) = to else { unreachable!("the probe seeks from the start") };
        self.pos = p;
        Ok(p)
    }
}

// ---- real files (scripts/media-fixtures.sh, ffmpeg 5.1.9) ----

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/media/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The facts ffprobe reported for each fixture.
fn fixtures() -> Vec<(&'static str, MediaFacts)> {
    let video = |codec: &str, duration_ms: Option<u64>, frame_rate: Option<f64>| MediaFacts {
        container: Container::Mp4,
        duration_ms,
        width: Some(64),
        height: Some(36),
        frame_rate,
        codec: Some(codec.into()),
        views: Some(1),
        hero_eye: None,
        baseline_mm: None,
        hfov_deg: None,
        projection: None,
        packing: None,
        audio_channels: None,
        sample_rate: None,
    };
    let audio = |container, codec: &str, duration_ms, rate| MediaFacts {
        container,
        duration_ms: Some(duration_ms),
        width: None,
        height: None,
        frame_rate: None,
        codec: Some(String::from(codec)),
        views: None,
        hero_eye: None,
        baseline_mm: None,
        hfov_deg: None,
        projection: None,
        packing: None,
        audio_channels: Some(1),
        sample_rate: Some(rate),
    };
    vec![
        ("h264_moov_last.mp4", video("avc1", Some(500), Some(30.0))),
        ("h264_faststart.mp4", video("avc1", Some(500), Some(30.0))),
        (
            "hevc_aac.mp4",
            MediaFacts { audio_channels: Some(1), sample_rate: Some(48000), ..video("hvc1", Some(500), Some(30.0)) },
        ),
        ("aac.m4a", audio(Container::Mp4, "mp4a", 500, 48000)),
        (
            "prores_aac.mov",
            MediaFacts {
                container: Container::Quicktime,
                audio_channels: Some(1),
                sample_rate: Some(48000),
                ..video("apcn", Some(500), Some(30.0))
            },
        ),
        ("pcm96k.mov", audio(Container::Quicktime, "lpcm", 20, 96000)),
        // ffmpeg's empty moov: no mehd, a zero mvhd duration and a zero trex
        // default duration, so neither duration nor frame rate is known
        // without reading the fragments.
        ("h264_fragmented.mp4", video("avc1", None, None)),
    ]
}

#[test]
fn ffmpeg_files_facts() {
    for (name, want) in fixtures() {
        let bytes = fixture(name);
        assert!(bytes.len() < 10_000, "{name} is {} bytes", bytes.len());
        assert_eq!(probe_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}")), want, "{name}");
    }
}

#[test]
fn ffmpeg_files_every_strict_prefix_is_not_ok() {
    for (name, _) in fixtures() {
        let bytes = fixture(name);
        for n in 0..bytes.len() {
            let (k, m) = verdict(probe_bytes(&bytes[..n]));
            assert!(matches!(k, "unfinished" | "truncated"), "{name}[..{n}]: {k}: {m}");
        }
    }
}

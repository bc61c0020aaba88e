//! The server-response decoder against arbitrary input: it never panics,
//! and every absurd plan it is given comes back as an error, not a value.

use proptest::prelude::*;

use super::model::{FileCompleted, GroupCreated, MAX_PARTS, PartUrls};

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<GroupCreated>(&bytes);
        let _ = serde_json::from_slice::<FileCompleted>(&bytes);
        if let Ok(p) = serde_json::from_slice::<PartUrls>(&bytes) {
            let _ = p.check();
        }
    }

    #[test]
    fn an_absurd_start_plan_is_always_an_error(
        total in any::<u64>(),
        part in any::<u64>(),
        parts in any::<u32>(),
    ) {
        let body = format!(
            r#"{{"sessionId":"s","files":[{{"uploadId":"u","fileRole":"video","fileName":"v.mov",
            "totalBytes":{total},"partSizeBytes":{part},"totalParts":{parts},"uploadStrategy":"multipart"}}]}}"#
        );
        let sane = (1..=MAX_PARTS).contains(&parts) && total > 0 && part > 0
            && total.div_ceil(part) == u64::from(parts);
        match serde_json::from_str::<GroupCreated>(&body) {
            Ok(g) => {
                prop_assert!(sane, "accepted an absurd plan: {total} / {part} / {parts}");
                prop_assert_eq!(g.files.len(), 1);
            }
            Err(e) => {
                prop_assert!(!sane, "refused a sane plan: {e}");
                prop_assert!(e.to_string().contains("v.mov"), "the error names the file: {e}");
            }
        }
    }

    #[test]
    fn part_urls_with_arbitrary_ranges_never_pass_unless_they_tile_the_file(
        total in 1u64..1_000_000,
        part in 1u64..100_000,
        n in 1u32..20,
        start in any::<u64>(),
        end in any::<u64>(),
        size in any::<u64>(),
    ) {
        let parts = total.div_ceil(part);
        let body = format!(
            r#"{{"uploadId":"u","fileName":"v.mov","totalBytes":{total},"partSizeBytes":{part},
            "totalParts":{parts},"uploadStrategy":"multipart","parts":[{{"partNumber":{n},
            "sizeBytes":{size},"byteStart":{start},"byteEnd":{end},"url":"http://s/b?x=1"}}]}}"#
        );
        if let Ok(p) = serde_json::from_str::<PartUrls>(&body) {
            let ok = p.check().is_ok();
            let want_start = u64::from(n - 1) * part;
            let tiles = u64::from(n) <= parts
                && start == want_start
                && end == (want_start + part).min(total) - 1
                && size == end - start + 1;
            prop_assert_eq!(ok, tiles);
        }
    }
}

//! How the verdicts write numbers: byte sizes in binary units with one
//! decimal, byte offsets with thousands separators, box types as text.

/// `n` bytes as `B` / `KiB` / `MiB` / `GiB`, one decimal above bytes
/// (`512 B`, `3.1 MiB`, `1.4 GiB`).
pub(super) fn size(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    for unit in ["KiB", "MiB"] {
        // Pick the larger unit once the rounded value would read 1024.0.
        if (value * 10.0).round() < 10240.0 {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{value:.1} GiB")
}

/// `n` with a comma between each group of three digits (`312,000,000`).
pub(crate) fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Can this byte be part of a box type? Printable ASCII, and `©` (0xA9),
/// which QuickTime uses for its metadata keys.
pub(super) fn type_byte(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) || b == 0xa9
}

/// A box type as text: `mdat`, or its bytes in hex when they are not text
/// (`00 00 00 00`).
pub(super) fn fourcc(kind: [u8; 4]) -> String {
    if kind.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
        kind.iter().map(|&b| b as char).collect()
    } else if kind.iter().all(|&b| type_byte(b)) {
        kind.iter().map(|&b| if b == 0xa9 { '©' } else { b as char }).collect()
    } else {
        kind.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(3_250_586), "3.1 MiB");
        assert_eq!(size(297 << 20), "297.0 MiB");
        assert_eq!(size(1_503_238_554), "1.4 GiB");
        assert_eq!(size(2 << 30), "2.0 GiB");
        // Just under a unit boundary, the larger unit.
        assert_eq!(size((1 << 20) - 1), "1.0 MiB");
        assert_eq!(size(u64::MAX), "17179869184.0 GiB");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(312_000_000), "312,000,000");
        assert_eq!(num(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn box_types_as_text() {
        assert_eq!(fourcc(*b"mdat"), "mdat");
        assert_eq!(fourcc(*b"\xa9swr"), "©swr");
        assert_eq!(fourcc([0, 1, 0xfe, b'a']), "00 01 fe 61");
    }
}

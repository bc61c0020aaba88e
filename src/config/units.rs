//! Value types written as strings in the file: [`Dur`] (`30s`, `5m`),
//! [`Rate`] (`200MiB/s`), the never-shown [`ApiKey`], and the weekday and
//! `HH:MM` parsers upload windows use. Each parses with `FromStr` and goes
//! through serde as its string form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written like `30s`, `5m`, `2h` or `1h 30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration any setting takes: ten years. Longer ones are
    /// refused when parsed, so no deadline computed from one can overflow.
    pub const MAX: Dur = Dur::secs(3650 * 24 * 3600);

    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff's friendly format: `30s`, `5m`, `1h 30m`, `1s 500ms`.
        let d = jiff::SignedDuration::try_from(self.0).unwrap_or(jiff::SignedDuration::MAX);
        write!(f, "{d:#}")
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        // jiff's friendly format (`30s`, `5m`, `5min`, `2hours`, `1h 30m`,
        // `200ms`); days, when written, are 24 hours.
        let t = s.trim();
        t.parse::<jiff::SignedDuration>()
            .or_else(|e| {
                let span = t.parse::<jiff::Span>().map_err(|_| e.clone())?;
                span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|_| e)
            })
            .map_err(|e| e.to_string())
            .and_then(|d| Duration::try_from(d).map_err(|_| "a duration cannot be negative".to_string()))
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like \"30s\", \"5m\" or \"2h\""))
            .and_then(|d| {
                if d > Dur::MAX.0 {
                    Err(format!("duration {s:?} is above the limit of {}", Dur::MAX))
                } else {
                    Ok(Dur(d))
                }
            })
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A transfer rate written like `200MiB/s`, `50MB/s` or `800Mbit/s`, in bytes per second.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rate(pub u64);

impl Rate {
    /// The highest rate a limit may name, 100 GiB/s: beyond any link the
    /// agent uploads over, and far from the arithmetic's edge.
    pub const MAX: Rate = Rate(100 * 1024 * 1024 * 1024);
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate {s:?}; write it like \"200MiB/s\", \"50MB/s\" or \"800Mbit/s\"");
        let t = s.trim();
        let t = t.strip_suffix("/s").ok_or_else(bad)?.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num.parse().map_err(|_| bad())?;
        let mult: f64 = match unit.trim() {
            "B" => 1.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "kbit" | "Kbit" => 1e3 / 8.0,
            "Mbit" => 1e6 / 8.0,
            "Gbit" => 1e9 / 8.0,
            _ => return Err(bad()),
        };
        let bytes = num * mult;
        if !(bytes >= 1.0 && bytes.is_finite()) {
            return Err(format!("rate {s:?} must be at least 1 B/s"));
        }
        if bytes > Rate::MAX.0 as f64 {
            return Err(format!("rate {s:?} is above the limit of 100GiB/s (leave the limit out for none)"));
        }
        Ok(Rate(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}B/s", self.0))
    }
}

/// The secret the webhook body is signed with (HMAC-SHA256). Like
/// [`ApiKey`], its `Debug` and `Display` never show it; only the signer
/// calls [`WebhookSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> WebhookSecret {
        WebhookSecret(secret.into())
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The API key. Its `Debug` and `Display` never show it; only
/// [`ApiKey::expose`] does, and only `api/` calls that, to set the header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The console's bearer token (`[http] token_file`): like [`ApiKey`], never
/// shown; compared only with [`HttpToken::matches`], in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpToken(String);

impl HttpToken {
    pub fn new(token: impl Into<String>) -> HttpToken {
        HttpToken(token.into())
    }

    /// Is `given` this token? Every byte is looked at whatever the first
    /// difference, so the time taken does not tell how much of a guess was right.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = u8::from(a.len() != b.len());
        for i in 0..a.len().max(b.len()) {
            diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpToken(***)")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `mon`..`sun` (also full names) to 0..6.
pub fn parse_weekday(s: &str) -> Option<u8> {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let l = s.trim().to_ascii_lowercase();
    DAYS.iter().position(|d| l.starts_with(d) && (l.len() == 3 || l.ends_with("day"))).map(|p| p as u8)
}

/// `HH:MM` to minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.trim().len() <= 5).then_some(h * 60 + m)
}

//! Request and response bodies of the Direct Upload API, camelCase on the wire.
//!
//! Requests omit `None` fields (the API wants `languageTag` absent, not null,
//! for roles without a language). Responses ignore unknown fields and are
//! lenient where `spatialgen-api.md` marks the shape as assumed; what the
//! client cannot be lenient about (the byte range of a part) is checked by
//! [`PartUrls::check`] before anything is sent to a URL.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::redact_url;
use crate::model::{FileRole, Layout, Perspective};

/// Body of `POST /api/videos/uploads`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartGroup {
    pub video_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub layout: Layout,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perspective: Option<Perspective>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folder_name: Option<String>,
    pub files: Vec<StartFile>,
}

/// One `files[]` item of [`StartGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartFile {
    pub file_name: String,
    pub file_role: FileRole,
    pub size_bytes: u64,
    /// Required for audio and subtitle, absent for every other role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_tag: Option<String>,
}

pub use crate::model::Strategy;

/// Answer to Start Upload Group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawGroupCreated")]
pub struct GroupCreated {
    /// `sessionId`, or `uploadSessionId` from servers that spell it so.
    pub session_id: String,
    pub status: Option<String>,
    /// ISO-8601, as sent; kept as text since it is only shown and stored.
    pub expires_at: Option<String>,
    pub files: Vec<CreatedFile>,
}

impl GroupCreated {
    /// The server's record of one of our files. Matched by name and role,
    /// never by position: the server may answer in any order.
    pub fn file_for(&self, name: &str, role: FileRole) -> Option<&CreatedFile> {
        self.files.iter().find(|f| f.file_name == name && f.file_role == role)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGroupCreated {
    session_id: Option<String>,
    upload_session_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    files: Vec<CreatedFile>,
}

impl TryFrom<RawGroupCreated> for GroupCreated {
    type Error = String;
    fn try_from(raw: RawGroupCreated) -> Result<Self, String> {
        let session_id = raw
            .session_id
            .or(raw.upload_session_id)
            .filter(|s| !s.is_empty())
            .ok_or("neither `sessionId` nor `uploadSessionId` is present")?;
        for f in &raw.files {
            f.check()?;
        }
        Ok(GroupCreated { session_id, status: raw.status, expires_at: raw.expires_at, files: raw.files })
    }
}

/// The session id of a Start Upload Group answer that could not be decoded
/// as a whole (so that the group it created can be canceled): the first
/// `"sessionId"` or `"uploadSessionId"` key followed by a plain string, found
/// in the text itself, so that a truncated or malformed body still yields it.
pub(crate) fn lenient_session_id(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    ["\"sessionId\"", "\"uploadSessionId\""].iter().find_map(|key| {
        let rest = text[text.find(key)? + key.len()..].trim_start().strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix('"')?;
        let id = &rest[..rest.find('"')?];
        let plain = !id.is_empty() && id.len() <= 200 && !id.contains(['\\', '/']) && !id.chars().any(char::is_control);
        plain.then(|| id.to_string())
    })
}

/// One file as the server registered it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedFile {
    pub upload_id: String,
    pub file_role: FileRole,
    pub file_name: String,
    pub total_bytes: u64,
    /// Chosen by the server; never assumed by the client.
    pub part_size_bytes: u64,
    pub total_parts: u32,
    pub upload_strategy: Strategy,
    #[serde(default)]
    pub status: Option<String>,
}

impl CreatedFile {
    /// The part layout must add up, or byte ranges computed from it would be wrong.
    fn check(&self) -> Result<(), String> {
        check_plan(&self.file_name, self.upload_strategy, self.total_bytes, self.part_size_bytes, self.total_parts)?;
        let expected = expected_parts(self.strategy_layout());
        if self.total_parts != expected {
            return Err(format!(
                "file {:?}: totalParts {} does not match totalBytes {} / partSizeBytes {} ({expected} expected)",
                self.file_name, self.total_parts, self.total_bytes, self.part_size_bytes
            ));
        }
        Ok(())
    }

    fn strategy_layout(&self) -> PartLayout {
        PartLayout::of(self.upload_strategy, self.total_bytes, self.part_size_bytes)
    }

    /// `[start, end]` (inclusive) of part `n` (1-based), or `None` if there is no such part.
    pub fn part_range(&self, n: u32) -> Option<(u64, u64)> {
        self.strategy_layout().range(n)
    }
}

/// The API allows at most this many parts per file.
pub const MAX_PARTS: u32 = 10_000;

/// Refuse a plan no real upload can follow: no parts or more than
/// [`MAX_PARTS`], a zero part size (multipart), an empty file.
fn check_plan(name: &str, strategy: Strategy, total: u64, part_size: u64, parts: u32) -> Result<(), String> {
    if parts == 0 || parts > MAX_PARTS {
        return Err(format!("file {name:?}: totalParts {parts} is outside 1..={MAX_PARTS}"));
    }
    if total == 0 {
        return Err(format!("file {name:?}: totalBytes is 0"));
    }
    if strategy == Strategy::Multipart && part_size == 0 {
        return Err(format!("file {name:?}: partSizeBytes is 0"));
    }
    Ok(())
}

/// Where each part's bytes lie, from the three numbers the server sends.
#[derive(Debug, Clone, Copy)]
struct PartLayout {
    total: u64,
    /// Zero means "no parts" (bad input); the check refuses it.
    part: u64,
}

impl PartLayout {
    fn of(strategy: Strategy, total: u64, part_size: u64) -> PartLayout {
        match strategy {
            // One part covering the whole file, whatever partSizeBytes says.
            Strategy::SinglePut => PartLayout { total, part: total },
            Strategy::Multipart => PartLayout { total, part: part_size },
        }
    }

    fn range(self, n: u32) -> Option<(u64, u64)> {
        if n == 0 || self.part == 0 || self.total == 0 {
            return None;
        }
        let start = u64::from(n - 1).checked_mul(self.part)?;
        if start >= self.total {
            return None;
        }
        let end = start.saturating_add(self.part).min(self.total) - 1;
        Some((start, end))
    }
}

fn expected_parts(l: PartLayout) -> u32 {
    if l.part == 0 || l.total == 0 {
        return 0;
    }
    u32::try_from(l.total.div_ceil(l.part)).unwrap_or(u32::MAX)
}

/// Body of Get Part URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartUrlsRequest {
    /// `{"partNumbers": [...]}`: specific parts (retries, refreshes).
    Numbers(Vec<u32>),
    /// `{"startPartNumber": start, "count": count}`; the API allows `count` up to 10,000.
    Range { start: u32, count: u32 },
    /// `{}`: the one URL of a single_put file.
    SinglePut,
}

impl Serialize for PartUrlsRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            PartUrlsRequest::Numbers(n) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("partNumbers", n)?;
                m.end()
            }
            PartUrlsRequest::Range { start, count } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("startPartNumber", start)?;
                m.serialize_entry("count", count)?;
                m.end()
            }
            PartUrlsRequest::SinglePut => s.serialize_map(Some(0))?.end(),
        }
    }
}

/// Answer to Get Part URLs. Only returned by the client after [`PartUrls::check`] passed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartUrls {
    pub upload_id: String,
    #[serde(default)]
    pub file_role: Option<FileRole>,
    #[serde(default)]
    pub file_name: Option<String>,
    pub total_bytes: u64,
    pub part_size_bytes: u64,
    pub total_parts: u32,
    pub upload_strategy: Strategy,
    #[serde(default)]
    pub status: Option<String>,
    pub parts: Vec<PartUrl>,
}

impl PartUrls {
    /// Refuse a response whose byte ranges would send the wrong bytes:
    /// `sizeBytes` must equal `byteEnd - byteStart + 1` (byteEnd is inclusive),
    /// and part *n* must cover `[(n-1)*partSize, min(n*partSize, total) - 1]`.
    pub fn check(&self) -> Result<(), String> {
        let name = self.file_name.as_deref().unwrap_or(&self.upload_id);
        check_plan(name, self.upload_strategy, self.total_bytes, self.part_size_bytes, self.total_parts)?;
        if self.parts.len() > MAX_PARTS as usize {
            return Err(format!("file {name:?}: {} part URLs, more than {MAX_PARTS}", self.parts.len()));
        }
        let layout = PartLayout::of(self.upload_strategy, self.total_bytes, self.part_size_bytes);
        let expected = expected_parts(layout);
        if self.total_parts != expected {
            return Err(format!(
                "totalParts {} does not match totalBytes {} / partSizeBytes {} ({expected} expected)",
                self.total_parts, self.total_bytes, self.part_size_bytes
            ));
        }
        for p in &self.parts {
            let n = p.part_number;
            let span = p.byte_end.checked_sub(p.byte_start).and_then(|d| d.checked_add(1));
            if span != Some(p.size_bytes) {
                return Err(format!(
                    "part {n}: sizeBytes {} but byteStart {} .. byteEnd {} (inclusive) spans {}",
                    p.size_bytes,
                    p.byte_start,
                    p.byte_end,
                    span.map_or_else(|| "a negative length".to_string(), |s| s.to_string())
                ));
            }
            match layout.range(n) {
                Some((start, end)) if (start, end) == (p.byte_start, p.byte_end) => {}
                Some((start, end)) => {
                    return Err(format!(
                        "part {n}: covers bytes {}..={} but should cover {start}..={end}",
                        p.byte_start, p.byte_end
                    ));
                }
                None => return Err(format!("part {n}: no such part in a file of {} part(s)", self.total_parts)),
            }
        }
        Ok(())
    }
}

/// One presigned PUT URL. `Debug` hides the URL's query (the signature).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartUrl {
    pub part_number: u32,
    pub size_bytes: u64,
    pub byte_start: u64,
    /// Inclusive.
    pub byte_end: u64,
    pub url: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

impl fmt::Debug for PartUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartUrl")
            .field("part_number", &self.part_number)
            .field("size_bytes", &self.size_bytes)
            .field("byte_start", &self.byte_start)
            .field("byte_end", &self.byte_end)
            .field("url", &redact_url(&self.url))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// One entry of Complete File Upload's `parts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedPart {
    pub part_number: u32,
    /// Verbatim from the PUT's `ETag` header, quotes included.
    pub etag: String,
}

/// Body of Complete File Upload: `{"parts": [...]}`, or `{}` for single_put.
#[derive(Debug, Serialize)]
pub(crate) struct CompleteBody<'a> {
    #[serde(skip_serializing_if = "<[CompletedPart]>::is_empty")]
    pub parts: &'a [CompletedPart],
}

/// Answer to Complete File Upload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCompleted {
    #[serde(default)]
    pub upload_id: Option<String>,
    #[serde(default)]
    pub file_role: Option<FileRole>,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub status: String,
    /// `null` until the group's last file completes; then the new library entry.
    #[serde(default, deserialize_with = "lenient_id")]
    pub library_id: Option<u64>,
}

impl FileCompleted {
    /// Does the answer say the file is completed? A 2xx whose `status` is
    /// another word is not; one with no `status` at all is taken at its 2xx
    /// (the client stays lenient where the contract is only assumed).
    pub fn is_completed(&self) -> bool {
        self.status.is_empty() || self.status.eq_ignore_ascii_case("completed")
    }
}

/// A library id sent as a number, or (leniently) as a string of digits.
fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        N(u64),
        S(String),
    }
    match Option::<Id>::deserialize(d)? {
        None => Ok(None),
        Some(Id::N(n)) => Ok(Some(n)),
        Some(Id::S(s)) => {
            s.trim().parse().map(Some).map_err(|_| serde::de::Error::custom(format!("libraryId {s:?} is not a number")))
        }
    }
}

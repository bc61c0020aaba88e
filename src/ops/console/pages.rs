//! The console's reads that must cost the same with a year of history:
//! `/api/v1/status` (what is going on, and one page of ended groups),
//! `/api/v1/status?since=` (only what changed), and `/api/v1/groups`
//! (older pages, the search).
//!
//! Every answer is built by one journal call of a few indexed queries; the
//! work in flight (`active`) and what needs a person (`attention`) come in
//! full, ended groups a page at a time. A reader that keeps the `cursor`
//! (the newest history line it has seen) and asks `?since=` gets the ended
//! groups whose history moved after it; with `If-None-Match` an answer that
//! did not change is a bodiless `304`.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Console, ConsoleError, pauses_json};
use crate::journal::{GroupFilter, GroupId, GroupState, GroupSummary, MAX_PAGE, Pause};
use crate::ops::status::{ATTENTION, ENDED, active, attention, json_rows};

/// Rows in a page of ended groups unless `?limit=` says otherwise.
pub const DEFAULT_PAGE: u32 = 50;

/// The most queued (and, separately, waiting) groups `active` lists: the
/// next ones to go. The rest are in `counts`. With the attention ids and
/// the rest, an update stays under 64 KiB however long the queue.
pub const ACTIVE_SHOWN: u32 = 50;

/// The most changed groups one `?since=` answer carries; beyond it the
/// answer says `more` and the reader loads the first page again.
pub const MAX_CHANGED: u32 = 100;

/// The query string of a page, as sent; [`PageQuery::parse`] checks it.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    state: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    before: Option<String>,
    since: Option<String>,
}

/// A checked [`PageQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub states: Vec<GroupState>,
    pub text: Option<String>,
    pub limit: u32,
    pub before: Option<GroupId>,
    pub since: Option<i64>,
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConsoleError> {
    v.trim().parse().map_err(|_| ConsoleError::BadRequest(format!("?{name}= takes a whole number, not {v:?}")))
}

impl PageQuery {
    /// The page asked for; `states` when `?state=` is absent. A bad value is
    /// a 400 that names the parameter.
    pub fn parse(self, states: &[GroupState]) -> Result<Page, ConsoleError> {
        let states = match self.state.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => states.to_vec(),
            Some(list) => list
                .split(',')
                .map(|s| {
                    s.trim().parse::<GroupState>().map_err(|_| {
                        let known: Vec<&str> = GroupState::ALL.iter().map(|s| s.as_str()).collect();
                        ConsoleError::BadRequest(format!(
                            "?state= takes states separated by commas ({}); {:?} is none of them",
                            known.join(", "),
                            s.trim()
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(v) => match number::<u32>("limit", v)? {
                n @ 1..=MAX_PAGE => n,
                _ => return Err(ConsoleError::BadRequest(format!("?limit= is between 1 and {MAX_PAGE}"))),
            },
        };
        Ok(Page {
            states,
            text: self.q.map(|q| q.trim().to_string()).filter(|q| !q.is_empty()),
            limit,
            before: self.before.as_deref().map(|v| number("before", v)).transpose()?,
            since: self.since.as_deref().map(|v| number("since", v)).transpose()?,
        })
    }
}

impl Page {
    /// The journal filter of this page, one row more than shown: that row
    /// says whether an older page exists.
    fn filter(&self) -> GroupFilter {
        GroupFilter {
            states: self.states.clone(),
            text: self.text.clone(),
            before: self.before,
            limit: Some(self.limit + 1),
            ..GroupFilter::default()
        }
    }
}

/// `rows` cut to `limit`, and the cursor of the next page when rows were cut.
fn cut<T>(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> GroupId) -> (Vec<T>, Option<GroupId>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let next = rows.last().map(id);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// What one `/api/v1/status` answer is made of, read in one journal call.
struct Snapshot {
    cursor: i64,
    /// The counts and attention, as of `cursor`.
    unmoved: Unmoved,
    active: Vec<GroupSummary>,
    /// The page of ended groups, or (with `since`) those that changed.
    ended: Vec<GroupSummary>,
    /// With `since`: the groups needing attention whose history moved after
    /// it (`None`: more than [`MAX_CHANGED`], the whole list is sent).
    attention_changed: Option<Vec<GroupSummary>>,
    pauses: Vec<Pause>,
}

/// What an event stream reuses while the history has not moved: the counts
/// per state and the groups needing attention change only with a history
/// line, so a tick that finds the same newest line reads neither again
/// (the counts read the whole state index). Reused for [`REUSE_FOR`] at
/// most: on PostgreSQL a line with a smaller id may commit after a larger one.
#[derive(Clone)]
struct Unmoved {
    cursor: i64,
    read_at: Instant,
    counts: Vec<(GroupState, u64)>,
    attention: Vec<GroupSummary>,
}

/// The longest counts and attention are reused while the history has not moved.
const REUSE_FOR: Duration = Duration::from_secs(10);

fn read(
    j: &dyn crate::journal::Store,
    page: &Page,
    known: Option<Unmoved>,
) -> Result<Snapshot, crate::journal::JournalError> {
    // The cursor first: a line written while the rest is read is sent again
    // next time, never missed.
    let cursor = j.last_event_id()?;
    let unmoved = match known.filter(|k| k.cursor == cursor && k.read_at.elapsed() < REUSE_FOR) {
        Some(k) => k,
        None => Unmoved { cursor, read_at: Instant::now(), counts: j.count_by_state()?, attention: attention(j)? },
    };
    let active = active(j, Some(ACTIVE_SHOWN))?;
    let changed = |states: &[GroupState]| {
        j.groups(&GroupFilter {
            changed_after: page.since,
            limit: Some(MAX_CHANGED + 1),
            ..GroupFilter::newest(states, 0)
        })
    };
    let (ended, attention_changed) = match page.since {
        Some(_) => {
            let attention = changed(&ATTENTION)?;
            (changed(&page.states)?, (attention.len() <= MAX_CHANGED as usize).then_some(attention))
        }
        None => (j.groups(&page.filter())?, None),
    };
    Ok(Snapshot { cursor, unmoved, active, ended, attention_changed, pauses: j.pauses()? })
}

/// The answer as JSON, with an `ETag` of its bytes; `304` when the
/// request's `If-None-Match` is that tag.
fn tagged(headers: &HeaderMap, body: &Value) -> Result<Response, ConsoleError> {
    let bytes = serde_json::to_vec(body)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let tag = format!("\"{:016x}\"", h.finish());
    let tag_value = HeaderValue::from_str(&tag).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    let seen = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let common = [(header::ETAG, tag_value), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))];
    if seen {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Ok((common, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response())
}

/// The body of a `/api/v1/status` answer for `page`, and what the next
/// answer of the same reader may reuse.
async fn answer(c: &Console, page: &Page, known: Option<Unmoved>) -> Result<(Value, Unmoved), ConsoleError> {
    let asked = page.clone();
    let snap = c.journal.call(move |j| read(j, &asked, known)).await?;
    let agent = c.controls.agent();
    let mut agent_json = serde_json::to_value(&agent)?;
    if let Value::Object(m) = &mut agent_json {
        m.insert("pauses".into(), Value::Array(pauses_json(&snap.pauses, &agent.windows)?));
    }
    let counts: serde_json::Map<String, Value> =
        snap.unmoved.counts.iter().map(|(s, n)| (s.as_str().to_string(), json!(n))).collect();
    // An update names every group needing attention but carries only the
    // rows that changed (the list is as long as failures go unhandled).
    let attention = match &snap.attention_changed {
        Some(rows) => json_rows(rows, &snap.pauses)?,
        None => json_rows(&snap.unmoved.attention, &snap.pauses)?,
    };
    let mut body = json!({
        "agent": agent_json,
        "counts": counts,
        "active": json_rows(&snap.active, &snap.pauses)?,
        "attention": attention,
        "cursor": snap.cursor.to_string(),
    });
    if let Value::Object(m) = &mut body {
        if snap.attention_changed.is_some() {
            let ids: Vec<GroupId> = snap.unmoved.attention.iter().map(|r| r.id).collect();
            m.insert("attentionIds".into(), json!(ids));
        }
        if page.since.is_some() {
            let (rows, more) = cut(snap.ended, MAX_CHANGED, |r| r.id);
            m.insert("changed".into(), Value::Array(json_rows(&rows, &snap.pauses)?));
            m.insert("more".into(), Value::Bool(more.is_some()));
        } else {
            let (rows, next) = cut(snap.ended, page.limit, |r| r.id);
            m.insert("ended".into(), json!({ "groups": json_rows(&rows, &snap.pauses)?, "next": next }));
        }
    }
    Ok((body, snap.unmoved))
}

/// `GET /api/v1/status`: the agent, counts per state, `active`, `attention`,
/// and a page of ended groups (`ended: {groups, next}`), or with `?since=`
/// the ended groups that changed after that cursor (`changed`, `more`).
pub async fn status(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, ConsoleError> {
    let page = q.parse(&ENDED)?;
    tagged(&headers, &answer(&c, &page, None).await?.0)
}

/// How often `/api/v1/events` looks for a change.
pub const EVENTS_TICK: Duration = Duration::from_secs(1);

/// `GET /api/v1/events`: Server-Sent Events. Each `update` event is what
/// `/api/v1/status?since=` would answer, its `id` the new cursor; one is
/// sent at once, then whenever the answer changes (looked at every
/// [`EVENTS_TICK`]). A reader that reconnects with `Last-Event-ID` (or
/// `?since=`) gets what it missed; without either it starts from now.
pub async fn events(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, ConsoleError> {
    let mut page = q.parse(&ENDED)?;
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    page.since = match resume.or(page.since) {
        Some(cursor) => Some(cursor),
        None => Some(c.journal.call(|j| j.last_event_id()).await?),
    };
    struct Follow {
        c: Console,
        page: Page,
        sent: Option<Vec<u8>>,
        first: bool,
        unmoved: Option<Unmoved>,
    }
    let follow = Follow { c, page, sent: None, first: true, unmoved: None };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if !std::mem::take(&mut f.first) {
                tokio::time::sleep(EVENTS_TICK).await;
            }
            let body = match answer(&f.c, &f.page, f.unmoved.take()).await {
                Ok((b, unmoved)) => {
                    f.unmoved = Some(unmoved);
                    b
                }
                Err(e) => {
                    tracing::debug!(error = %e, "console event stream: the journal did not answer; trying again");
                    continue;
                }
            };
            let Ok(bytes) = serde_json::to_vec(&body) else { continue };
            if f.sent.as_ref() == Some(&bytes) {
                continue;
            }
            let cursor = body["cursor"].as_str().unwrap_or_default().to_string();
            let event = Event::default().event("update").id(cursor.clone()).data(String::from_utf8_lossy(&bytes));
            f.page.since = cursor.parse().ok().or(f.page.since);
            f.sent = Some(bytes);
            return Some((Ok::<_, Infallible>(event), f));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// `GET /api/v1/groups`: one page of groups, newest first, `{groups, next}`
/// (`?state=`, default every state; `?q=`, `?limit=`, `?before=`).
pub async fn groups(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, ConsoleError> {
    let page = q.parse(&[])?;
    let filter = GroupFilter { changed_after: page.since, ..page.filter() };
    let (rows, pauses) = c.journal.call(move |j| Ok((j.groups(&filter)?, j.pauses()?))).await?;
    let (rows, next) = cut(rows, page.limit, |r| r.id);
    tagged(&headers, &json!({ "groups": json_rows(&rows, &pauses)?, "next": next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> PageQuery {
        let s: String = pairs.iter().map(|(k, v)| format!("{k}={}&", v.replace(' ', "%20"))).collect();
        let uri: axum::http::Uri = format!("/api/v1/status?{s}").parse().unwrap();
        Query::<PageQuery>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn a_page_defaults_to_fifty_of_the_given_states() {
        let p = PageQuery::default().parse(&ENDED).unwrap();
        assert_eq!(p, Page { states: ENDED.to_vec(), text: None, limit: 50, before: None, since: None });
    }

    #[test]
    fn each_parameter_is_read_and_a_bad_one_is_named() {
        let p = query(&[
            ("state", "failed, rejected"),
            ("q", " trailer "),
            ("limit", "10"),
            ("before", "77"),
            ("since", "5"),
        ])
        .parse(&ENDED)
        .unwrap();
        assert_eq!(
            p,
            Page {
                states: vec![GroupState::Failed, GroupState::Rejected],
                text: Some("trailer".into()),
                limit: 10,
                before: Some(77),
                since: Some(5)
            }
        );
        let err = |pairs: &[(&str, &str)]| query(pairs).parse(&ENDED).unwrap_err().to_string();
        assert!(err(&[("state", "done")]).contains("\"done\" is none of them"));
        assert!(err(&[("limit", "0")]).contains("between 1 and 500"));
        assert!(err(&[("limit", "501")]).contains("between 1 and 500"));
        assert!(err(&[("before", "x")]).contains("?before= takes a whole number"));
        assert!(err(&[("since", "-")]).contains("?since= takes a whole number"));
    }

    #[test]
    fn a_page_cut_to_its_limit_gives_the_cursor_of_the_next() {
        let (rows, next) = cut(vec![9, 8, 7], 2, |id| *id);
        assert_eq!((rows, next), (vec![9, 8], Some(8)));
        let (rows, next) = cut(vec![9, 8], 2, |id| *id);
        assert_eq!((rows, next), (vec![9, 8], None));
    }
}

//! The console's pages over real loopback HTTP on a real SQLite journal:
//! the first page, the older ones by cursor, the search, what changed
//! since a cursor, and `304` for an answer that did not change.

use serde_json::{Value, json};

use super::tests::{TOKEN, env};
use crate::journal::prelude::*;

/// The ids of the rows of `v`.
fn ids(v: &Value) -> Vec<i64> {
    v.as_array().expect("rows").iter().map(|r| r["id"].as_i64().expect("id")).collect()
}

#[tokio::test]
async fn the_status_page_lists_active_and_attention_in_full_and_history_a_page_at_a_time() {
    let e = env(Some(TOKEN)).await;
    let done: Vec<i64> = (0..120).map(|i| e.group(&format!("clip-{i:03}"))).collect();
    e.journal
        .test_sql(&format!("UPDATE groups SET state = 'completed', library_id = 1 WHERE id <= {}", done[119]))
        .unwrap();
    let failed = e.group("broken");
    e.journal.test_sql(&format!("UPDATE groups SET state = 'failed', error = 'no' WHERE id = {failed}")).unwrap();
    let queued = [e.group("next-a"), e.group("next-b")];

    let (code, v) = e.get("/api/v1/status").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["counts"]["completed"], 120);
    assert_eq!((v["counts"]["failed"].clone(), v["counts"]["queued"].clone()), (json!(1), json!(2)));
    assert_eq!(ids(&v["active"]), queued.to_vec(), "every active group, the next to go first");
    assert_eq!(v["active"][0]["queuePosition"], 1);
    assert_eq!(ids(&v["attention"]), vec![failed]);
    let first = ids(&v["ended"]["groups"]);
    let newest: Vec<i64> = done.iter().rev().take(50).copied().collect();
    assert_eq!(first, newest, "the newest 50 ended groups");
    assert_eq!(v["ended"]["next"], json!(done[70]));

    // Older pages by the cursor, until there is none.
    let (_, p2) = e.get(&format!("/api/v1/groups?state=completed&before={}", done[70])).await;
    assert_eq!(ids(&p2["groups"]), done.iter().rev().skip(50).take(50).copied().collect::<Vec<_>>());
    let (_, p3) = e.get(&format!("/api/v1/groups?state=completed&before={}&limit=500", p2["next"])).await;
    assert_eq!(ids(&p3["groups"]).len(), 20);
    assert_eq!(p3["next"], Value::Null, "no older page");

    // The search: a part of the name, any case, over every state by default.
    let (_, hit) = e.get("/api/v1/groups?q=CLIP-04").await;
    assert_eq!(ids(&hit["groups"]), (40..50).rev().map(|i| done[i]).collect::<Vec<_>>());
    let (_, hit) = e.get("/api/v1/status?q=clip-007").await;
    assert_eq!(ids(&hit["ended"]["groups"]), vec![done[7]]);
    let sep = if cfg!(windows) { "%5C" } else { "%2F" };
    let (_, hit) = e.get(&format!("/api/v1/groups?q=exports{sep}broken")).await;
    assert_eq!(ids(&hit["groups"]), vec![failed], "the path is searched too");

    // A bad parameter is named, not ignored.
    let (code, v) = e.get("/api/v1/groups?state=done").await;
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("?state="), "{v}");
    let (code, v) = e.get("/api/v1/status?limit=100000").await;
    assert_eq!(code, 400);
    assert!(v["error"].as_str().unwrap().contains("?limit="), "{v}");
}

#[tokio::test]
async fn a_reader_with_a_cursor_gets_only_what_changed_and_304_when_nothing_did() {
    let e = env(Some(TOKEN)).await;
    let done: Vec<i64> = (0..30).map(|i| e.group(&format!("clip-{i:03}"))).collect();
    e.journal.test_sql("UPDATE groups SET state = 'completed', library_id = 1").unwrap();
    let (_, v) = e.get("/api/v1/status").await;
    let cursor = v["cursor"].as_str().expect("a cursor").to_string();

    let since = |tag: Option<String>| {
        let mut req = e.http.get(format!("{}/api/v1/status?since={cursor}", e.base));
        if let Some(t) = tag {
            req = req.header("If-None-Match", t);
        }
        req.send()
    };
    let r = since(None).await.unwrap();
    assert_eq!(r.status(), 200);
    let tag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["changed"], json!([]), "nothing changed: {body}");
    assert_eq!((body["more"].clone(), body["cursor"].as_str()), (json!(false), Some(cursor.as_str())));
    assert!(body.get("ended").is_none(), "no page of history in an update");

    let r = since(Some(tag.clone())).await.unwrap();
    assert_eq!(r.status(), 304, "the same answer again is not sent");
    assert!(r.bytes().await.unwrap().is_empty());

    // One ended group's history moves: it alone comes back, with a newer cursor.
    e.journal.note(done[3], "receipt written").unwrap();
    let r = since(Some(tag)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(ids(&body["changed"]), vec![done[3]]);
    assert!(body["cursor"].as_str().unwrap().parse::<i64>().unwrap() > cursor.parse::<i64>().unwrap());

    // `/api/v1/groups` answers the same question for any state.
    let (_, g) = e.get(&format!("/api/v1/groups?since={cursor}")).await;
    assert_eq!(ids(&g["groups"]), vec![done[3]]);
}

/// The next Server-Sent Event of `resp`: its `id` and `data` (after
/// `buf`, which keeps what arrived beyond it).
async fn next_event(resp: &mut reqwest::Response, buf: &mut String) -> (String, Value) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field =
                |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string());
            if let (Some(id), Some(data)) = (field("id:"), field("data:")) {
                assert_eq!(field("event:").as_deref(), Some("update"), "{block}");
                return (id, serde_json::from_str(&data).expect("the data is JSON"));
            }
            continue; // a keep-alive comment
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_event_stream_sends_the_state_at_once_then_each_change_and_resumes_from_last_event_id() {
    let e = env(Some(TOKEN)).await;
    let done: Vec<i64> = (0..5).map(|i| e.group(&format!("clip-{i}"))).collect();
    e.journal.test_sql("UPDATE groups SET state = 'completed', library_id = 1").unwrap();
    let queued = e.group("next");

    let mut resp = e.http.get(format!("{}/api/v1/events", e.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let (first, v) = next_event(&mut resp, &mut buf).await;
    assert_eq!(v["cursor"], first.as_str(), "the event's id is its cursor");
    assert_eq!(ids(&v["active"]), vec![queued]);
    assert_eq!(v["changed"], json!([]), "a reader without a cursor starts from now");

    e.journal.note(done[2], "receipt written").unwrap();
    let (second, v) = next_event(&mut resp, &mut buf).await;
    assert_eq!(ids(&v["changed"]), vec![done[2]]);
    assert!(second.parse::<i64>().unwrap() > first.parse::<i64>().unwrap());
    drop(resp);

    // A reader that lost the stream after the first event gets what it missed.
    let mut again =
        e.http.get(format!("{}/api/v1/events", e.base)).header("Last-Event-ID", &first).send().await.unwrap();
    let mut buf = String::new();
    let (id, v) = next_event(&mut again, &mut buf).await;
    assert_eq!((id, ids(&v["changed"])), (second, vec![done[2]]));
}

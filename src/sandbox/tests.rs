//! The sandbox as a server under test: real loopback HTTP from a plain
//! reqwest client (and raw TCP where reqwest would refuse to misbehave).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::Digest;

use super::*;
use crate::model::{FileRole, Layout};

const KEY: &str = "test-key";

struct Env {
    sb: Sandbox,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn env_with(part_size: u64, edit: impl FnOnce(&mut SandboxOptions)) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = SandboxOptions::new(dir.path());
    opts.part_size = part_size;
    edit(&mut opts);
    let sb = Sandbox::start("127.0.0.1:0".parse().expect("addr"), opts).await.expect("start sandbox");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    Env { sb, http, _dir: dir }
}

async fn env(part_size: u64) -> Env {
    env_with(part_size, |_| {}).await
}

/// Poll `cond` every 10 ms until it holds; panics after 10 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut v[..]);
    v
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn md5_etag(b: &[u8]) -> String {
    format!("\"{}\"", hex::encode(md5::Md5::digest(b)))
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}/api/videos/uploads{path}", self.sb.base_url())
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(KEY, method, path, body).await
    }

    /// An API call made with `key`.
    async fn call_as(&self, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path)).header(KEY_HEADER, key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API call");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn start(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "", Some(body)).await
    }

    async fn part_urls(&self, sid: &str, uid: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, &format!("/{sid}/files/{uid}/part-urls"), Some(body)).await
    }

    async fn complete(&self, sid: &str, uid: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, &format!("/{sid}/files/{uid}/complete"), Some(body)).await
    }

    async fn cancel(&self, sid: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, &format!("/{sid}"), None).await
    }

    async fn put(&self, url: &str, bytes: Vec<u8>) -> reqwest::Response {
        self.http.put(url).body(bytes).send().await.expect("storage PUT")
    }

    /// Start a group whose files are `(name, role, language, bytes)`.
    async fn start_group(&self, layout: &str, files: &[(&str, &str, Option<&str>, &[u8])]) -> Value {
        let files: Vec<Value> = files
            .iter()
            .map(|(name, role, lang, bytes)| {
                let mut f = json!({"fileName": name, "fileRole": role, "sizeBytes": bytes.len()});
                if let Some(l) = lang {
                    f["languageTag"] = json!(l);
                }
                f
            })
            .collect();
        let (status, v) = self.start(json!({"videoName": "clip", "layout": layout, "files": files})).await;
        assert_eq!(status, 201, "{v}");
        v
    }

    /// PUT every part of a file (in the given order of part numbers) and
    /// return the parts list for `complete`, ascending.
    async fn upload_parts(&self, sid: &str, file: &Value, bytes: &[u8], order: &[u64]) -> Value {
        let uid = file["uploadId"].as_str().expect("uploadId");
        let (status, v) = self.part_urls(sid, uid, json!({"partNumbers": order})).await;
        assert_eq!(status, 200, "{v}");
        let mut etags = Vec::new();
        for p in v["parts"].as_array().expect("parts") {
            let (start, end) = (p["byteStart"].as_u64().expect("start"), p["byteEnd"].as_u64().expect("end"));
            let chunk = bytes[start as usize..=end as usize].to_vec();
            let expected = md5_etag(&chunk);
            let resp = self.put(p["url"].as_str().expect("url"), chunk).await;
            assert_eq!(resp.status(), 200);
            let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
            assert_eq!(etag, expected, "ETag is the quoted hex MD5 of the part");
            etags.push((p["partNumber"].as_u64().expect("n"), etag));
        }
        etags.sort();
        json!({"parts": etags.iter().map(|(n, e)| json!({"partNumber": n, "etag": e})).collect::<Vec<_>>()})
    }

    fn violations_of(&self, kind: ContractViolationKind) -> Vec<ContractViolation> {
        self.sb.violations().into_iter().filter(|v| v.kind == kind).collect()
    }
}

fn file(group: &Value, i: usize) -> (&str, &str, &Value) {
    let f = &group["files"][i];
    (group["sessionId"].as_str().expect("sessionId"), f["uploadId"].as_str().expect("uploadId"), f)
}

// ---------------------------------------------------------------- validation

fn base() -> Value {
    json!({
        "videoName": "Trip",
        "layout": "2D",
        "files": [
            {"fileName": "trip.mov", "fileRole": "video", "sizeBytes": 100},
            {"fileName": "trip.en.m4a", "fileRole": "audio", "sizeBytes": 10, "languageTag": "en"},
            {"fileName": "trip.fr.srt", "fileRole": "subtitle", "sizeBytes": 5, "languageTag": "fr"},
        ]
    })
}

fn separate() -> Value {
    json!({
        "videoName": "Eyes",
        "layout": "Separate",
        "perspective": "Regular",
        "files": [
            {"fileName": "eyes_L.mov", "fileRole": "video_left", "sizeBytes": 100},
            {"fileName": "eyes_R.mp4", "fileRole": "video_right", "sizeBytes": 100},
            {"fileName": "eyes.aime", "fileRole": "aime", "sizeBytes": 3},
            {"fileName": "eyes.fcpxmld.zip", "fileRole": "fcpxmld", "sizeBytes": 3},
        ]
    })
}

fn aiv() -> Value {
    json!({
        "videoName": "Immersive",
        "layout": "AIV",
        "perspective": "180",
        "files": [{"fileName": "immersive.aivu", "fileRole": "video", "sizeBytes": 100}]
    })
}

fn with(mut v: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut v);
    v
}

fn set_file(v: Value, i: usize, key: &str, val: Value) -> Value {
    with(v, |v| v["files"][i][key] = val)
}

fn drop_file_key(v: Value, i: usize, key: &str) -> Value {
    with(v, |v| {
        v["files"][i].as_object_mut().expect("file").remove(key);
    })
}

fn push_file(v: Value, f: Value) -> Value {
    with(v, |v| v["files"].as_array_mut().expect("files").push(f))
}

fn drop_key(v: Value, key: &str) -> Value {
    with(v, |v| {
        v.as_object_mut().expect("object").remove(key);
    })
}

/// Each case breaks exactly one rule; the message names it.
fn rule_cases() -> Vec<(&'static str, Value, &'static str)> {
    let aime = json!({"fileName": "x.aime", "fileRole": "aime", "sizeBytes": 1});
    let fcpx = json!({"fileName": "x.zip", "fileRole": "fcpxmld", "sizeBytes": 1});
    vec![
        ("body not an object", json!([1, 2]), "the request body must be a JSON object"),
        ("videoName missing", drop_key(base(), "videoName"), "videoName is required"),
        ("videoName not a string", with(base(), |v| v["videoName"] = json!(5)), "videoName must be a string"),
        ("videoName empty", with(base(), |v| v["videoName"] = json!(" ")), "videoName must not be empty"),
        ("description not a string", with(base(), |v| v["description"] = json!(1)), "description must be a string"),
        ("folderName not a string", with(base(), |v| v["folderName"] = json!([])), "folderName must be a string"),
        ("layout missing", drop_key(base(), "layout"), "layout is required"),
        ("layout unknown", with(base(), |v| v["layout"] = json!("3D")), "layout \"3D\" is unknown"),
        ("layout wrong case", with(base(), |v| v["layout"] = json!("mvhevc")), "layout \"mvhevc\" is unknown"),
        ("layout not a string", with(base(), |v| v["layout"] = json!(2)), "layout must be a string"),
        ("perspective unknown", with(base(), |v| v["perspective"] = json!("90")), "perspective \"90\" is unknown"),
        ("perspective a number", with(base(), |v| v["perspective"] = json!(180)), "perspective must be a string"),
        ("files missing", drop_key(base(), "files"), "files is required"),
        ("files empty", with(base(), |v| v["files"] = json!([])), "files must contain at least one file"),
        ("files not an array", with(base(), |v| v["files"] = json!({})), "files must be an array"),
        ("file not an object", push_file(base(), json!("x.srt")), "files[3] must be a JSON object"),
        ("fileName missing", drop_file_key(base(), 1, "fileName"), "files[1]: fileName is required"),
        ("fileName not a string", set_file(base(), 1, "fileName", json!(3)), "files[1]: fileName must be a string"),
        ("fileName empty", set_file(base(), 1, "fileName", json!("")), "files[1]: fileName must not be empty"),
        ("sizeBytes missing", drop_file_key(base(), 0, "sizeBytes"), "sizeBytes is required"),
        ("sizeBytes zero", set_file(base(), 0, "sizeBytes", json!(0)), "sizeBytes must be a positive integer"),
        ("sizeBytes negative", set_file(base(), 0, "sizeBytes", json!(-4)), "sizeBytes must be a positive integer"),
        ("sizeBytes fraction", set_file(base(), 0, "sizeBytes", json!(1.5)), "sizeBytes must be a positive integer"),
        ("sizeBytes string", set_file(base(), 0, "sizeBytes", json!("10")), "sizeBytes must be a positive integer"),
        ("fileRole missing", drop_file_key(base(), 2, "fileRole"), "files[2] (trip.fr.srt): fileRole is required"),
        ("fileRole unknown", set_file(base(), 2, "fileRole", json!("thumbnail")), "fileRole \"thumbnail\" is unknown"),
        ("fileRole not a string", set_file(base(), 2, "fileRole", json!(1)), "fileRole must be a string"),
        (
            "video extension",
            set_file(base(), 0, "fileName", json!("trip.mkv")),
            "a video file must have one of the extensions .aivu, .mp4, .mov",
        ),
        (
            "video without extension",
            set_file(base(), 0, "fileName", json!("trip")),
            "a video file must have one of the extensions",
        ),
        (
            "audio extension",
            set_file(base(), 1, "fileName", json!("trip.wav")),
            "an audio file must have one of the extensions .mp4, .m4a",
        ),
        (
            "subtitle extension",
            set_file(base(), 2, "fileName", json!("trip.vtt")),
            "a subtitle file must have one of the extensions .srt",
        ),
        (
            "video_left extension",
            set_file(separate(), 0, "fileName", json!("eyes_L.aivu")),
            "a video_left file must have one of the extensions .mp4, .mov",
        ),
        (
            "video_right extension",
            set_file(separate(), 1, "fileName", json!("eyes_R.m4a")),
            "a video_right file must have one of the extensions .mp4, .mov",
        ),
        (
            "aime extension",
            set_file(separate(), 2, "fileName", json!("eyes.txt")),
            "an aime file must have one of the extensions .aime",
        ),
        (
            "fcpxmld extension",
            set_file(separate(), 3, "fileName", json!("eyes.fcpxmld")),
            "an fcpxmld file must have one of the extensions .zip",
        ),
        ("audio without language", drop_file_key(base(), 1, "languageTag"), "languageTag is required for audio files"),
        (
            "subtitle without language",
            drop_file_key(base(), 2, "languageTag"),
            "languageTag is required for subtitle files",
        ),
        (
            "language on video",
            set_file(base(), 0, "languageTag", json!("en")),
            "languageTag must be omitted for video files",
        ),
        (
            "language on aime",
            set_file(separate(), 2, "languageTag", json!("en")),
            "languageTag must be omitted for aime files",
        ),
        (
            "language with region",
            set_file(base(), 1, "languageTag", json!("en-US")),
            "languageTag \"en-us\" must be language-only, without a region",
        ),
        (
            "language with underscore region",
            set_file(base(), 2, "languageTag", json!("pt_BR")),
            "languageTag \"pt_br\" must be language-only",
        ),
        ("language unsupported", set_file(base(), 1, "languageTag", json!("xx")), "\"xx\" is not a supported language"),
        (
            "zxx on a subtitle",
            set_file(base(), 2, "languageTag", json!("zxx")),
            "languageTag \"zxx\" (no linguistic content) is accepted for audio only, not for subtitle",
        ),
        ("language not a string", set_file(base(), 1, "languageTag", json!(7)), "languageTag must be a string"),
        (
            "Separate without right",
            with(separate(), |v| {
                v["files"].as_array_mut().expect("files").remove(1);
            }),
            "layout Separate needs exactly one video_right file (found 0)",
        ),
        (
            "Separate with two lefts",
            push_file(separate(), json!({"fileName": "b_L.mov", "fileRole": "video_left", "sizeBytes": 1})),
            "layout Separate needs exactly one video_left file (found 2)",
        ),
        (
            "Separate with a video",
            push_file(separate(), json!({"fileName": "b.mov", "fileRole": "video", "sizeBytes": 1})),
            "layout Separate must not have a video file (found 1)",
        ),
        (
            "2D without video",
            with(base(), |v| {
                v["files"].as_array_mut().expect("files").remove(0);
            }),
            "layout 2D needs exactly one video file (found 0)",
        ),
        (
            "MVHEVC with two videos",
            push_file(
                with(base(), |v| v["layout"] = json!("MVHEVC")),
                json!({"fileName": "b.mp4", "fileRole": "video", "sizeBytes": 1}),
            ),
            "layout MVHEVC needs exactly one video file (found 2)",
        ),
        (
            "SBS with an eye file",
            push_file(
                with(base(), |v| v["layout"] = json!("SBS")),
                json!({"fileName": "b_R.mp4", "fileRole": "video_right", "sizeBytes": 1}),
            ),
            "layout SBS must not have video_left or video_right files (found 1)",
        ),
        ("two aime files", push_file(separate(), aime.clone()), "at most one aime file per group (found 2)"),
        ("two fcpxmld files", push_file(separate(), fcpx.clone()), "at most one fcpxmld file per group (found 2)"),
        (
            "AIV with perspective Regular",
            with(aiv(), |v| v["perspective"] = json!("Regular")),
            "layout AIV needs perspective 180 (got Regular)",
        ),
        (
            "AIV without perspective",
            drop_key(aiv(), "perspective"),
            "layout AIV needs perspective 180 (perspective is missing)",
        ),
        (
            "AIV with a .mov and nothing else",
            set_file(aiv(), 0, "fileName", json!("immersive.mov")),
            "layout AIV needs either a .aivu video file, or both an aime and an fcpxmld file",
        ),
        (
            "AIV with a .mov and only an aime",
            push_file(set_file(aiv(), 0, "fileName", json!("immersive.mov")), aime),
            "layout AIV needs either a .aivu video file, or both an aime and an fcpxmld file",
        ),
    ]
}

#[test]
fn validation_rules_each_have_their_own_message() {
    let cases = rule_cases();
    for (what, body, expected) in &cases {
        let errs = validate_start_request(body).expect_err(what);
        assert_eq!(errs.len(), 1, "{what}: exactly one rule broken, got {errs:?}");
        assert!(errs[0].contains(expected), "{what}: {:?} should contain {expected:?}", errs[0]);
    }
    // Distinct rules, distinct words (the same rule on different roles differs by role).
    let mut seen = std::collections::HashMap::new();
    for (what, body, _) in &cases {
        let msg = validate_start_request(body).expect_err(what).remove(0);
        let prev = seen.insert(msg.clone(), *what);
        let same_rule = matches!(
            (prev, *what),
            (Some("AIV with a .mov and nothing else"), "AIV with a .mov and only an aime")
                | (Some("sizeBytes zero"), _)
                | (Some("sizeBytes negative"), _)
                | (Some("sizeBytes fraction"), _)
        );
        assert!(prev.is_none() || same_rule, "{what} and {prev:?} share the message {msg:?}");
    }
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let body = json!({
        "layout": "Separate",
        "perspective": "Regular",
        "files": [
            {"fileName": "a_L.mkv", "fileRole": "video_left", "sizeBytes": 0},
            {"fileName": "a.srt", "fileRole": "subtitle", "sizeBytes": 3, "languageTag": "zxx"},
        ]
    });
    let errs = validate_start_request(&body).expect_err("many rules broken");
    let joined = errs.join("\n");
    for part in [
        "videoName is required",
        "a video_left file must have one of the extensions",
        "sizeBytes must be a positive integer",
        "accepted for audio only",
        "needs exactly one video_right file (found 0)",
    ] {
        assert!(joined.contains(part), "missing {part:?} in {joined}");
    }
    assert_eq!(errs.len(), 5, "{errs:#?}");
}

#[test]
fn valid_groups_are_accepted() {
    let mvhevc_zxx = with(base(), |v| {
        v["layout"] = json!("MVHEVC");
        v["files"][1]["languageTag"] = json!("zxx");
        v["files"][2]["languageTag"] = json!("SV");
        v["unknownField"] = json!({"ignored": true});
        v["description"] = Value::Null;
        v["files"][0]["languageTag"] = Value::Null;
        v["files"][0]["fileName"] = json!("TRIP.MOV");
    });
    let aiv_bundle = json!({
        "videoName": "Immersive",
        "layout": "AIV",
        "perspective": "180",
        "folderName": "Shoots",
        "description": "a day out",
        "files": [
            {"fileName": "immersive.mov", "fileRole": "video", "sizeBytes": 100},
            {"fileName": "immersive.aime", "fileRole": "aime", "sizeBytes": 3},
            {"fileName": "immersive.fcpxmld.zip", "fileRole": "fcpxmld", "sizeBytes": 3},
            {"fileName": "immersive_audio.mp4", "fileRole": "audio", "sizeBytes": 3, "languageTag": "ja"},
        ]
    });
    for (what, body) in [
        ("2D", base()),
        ("Separate", separate()),
        ("AIV .aivu", aiv()),
        ("AIV bundle", aiv_bundle),
        ("MVHEVC", mvhevc_zxx),
    ] {
        assert_eq!(validate_start_request(&body), Ok(()), "{what}");
    }
}

#[test]
fn languages_match_the_api_document() {
    let doc = "en es fr de it ja ko pt ru zh af am ar az bg bn bs ca cs da el et fa fi gu he hi hr hu hy id is ka \
               kn lt lv ml mr ms nl no pa pl ro sk sl sq sr sv sw ta te th tl tr uk ur vi";
    let doc: Vec<&str> = doc.split_whitespace().collect();
    assert_eq!(crate::model::LANGUAGES, doc.as_slice());
    for tag in doc {
        let body = set_file(base(), 2, "languageTag", json!(tag));
        assert_eq!(validate_start_request(&body), Ok(()), "{tag}");
    }
}

#[tokio::test]
async fn start_refuses_invalid_groups_over_http() {
    let e = env(1024).await;
    for (what, body, expected) in rule_cases().into_iter().take(20) {
        let (status, v) = e.start(body.clone()).await;
        assert_eq!(status, 422, "{what}: {v}");
        assert_eq!(v["error"], "validation_failed");
        assert!(v["message"].as_str().expect("message").contains(expected), "{what}: {v}");
        let listed: Vec<String> = serde_json::from_value(v["violations"].clone()).expect("violations");
        assert_eq!(Err(listed), validate_start_request(&body));
    }
    let resp = e
        .http
        .post(e.url(""))
        .header(KEY_HEADER, KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "bad_request");
    assert!(v["message"].as_str().expect("message").contains("not valid JSON"));
    assert!(e.sb.sessions().is_empty(), "nothing was created");
    e.sb.shutdown().await;
}

// ---------------------------------------------------------------- round trips

#[tokio::test]
async fn single_put_round_trip_is_byte_identical() {
    let e = env(1 << 20).await;
    let video = data(1 << 20, 1); // exactly one part: still single_put
    let subs = b"1\n00:00:01,000 --> 00:00:02,000\nHej\n".to_vec();
    let g = e
        .start_group("2D", &[("clip.mp4", "video", None, &video), ("clip.sv.srt", "subtitle", Some("SV"), &subs)])
        .await;
    assert_eq!(g["status"], "pending");
    assert!(g["expiresAt"].as_str().expect("expiresAt").ends_with('Z'));
    let (sid, uid, f) = file(&g, 0);
    assert_eq!(f["uploadStrategy"], "single_put");
    assert_eq!(f["totalParts"], 1);
    assert_eq!(f["totalBytes"], 1 << 20);
    assert_eq!(g["files"][1]["languageTag"], "sv", "language tags are lower-cased");

    let (status, urls) = e.part_urls(sid, uid, json!({})).await;
    assert_eq!(status, 200, "{urls}");
    let part = &urls["parts"][0];
    assert_eq!(urls["parts"].as_array().expect("parts").len(), 1);
    assert_eq!((part["byteStart"].as_u64(), part["byteEnd"].as_u64()), (Some(0), Some((1 << 20) - 1)));
    let url = part["url"].as_str().expect("url");
    assert!(url.starts_with(&e.sb.storage_url()) && !url.starts_with(&e.sb.base_url()), "storage is another port");
    let resp = e.put(url, video.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"].to_str().expect("etag"), md5_etag(&video));
    let (status, done) = e.complete(sid, uid, json!({})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "completed");
    assert_eq!(done["libraryId"], Value::Null, "not the last file");

    let (_, sub_uid, _) = file(&g, 1);
    let list = e.upload_parts(sid, &g["files"][1], &subs, &[1]).await;
    let (status, done) = e.complete(sid, sub_uid, list).await;
    assert_eq!(status, 200, "a single_put may also be completed with its one part: {done}");
    assert_eq!(done["libraryId"], 1);

    let lib = e.sb.library();
    assert_eq!(lib.len(), 1);
    assert_eq!((lib[0].library_id, lib[0].session_id.as_str(), lib[0].video_name.as_str()), (1, sid, "clip"));
    assert_eq!(lib[0].layout, Layout::TwoD);
    for (lf, bytes) in lib[0].files.iter().zip([&video, &subs]) {
        assert_eq!(lf.sha256, sha256_hex(bytes), "{}", lf.file_name);
        assert_eq!(std::fs::read(&lf.path).expect("stored file"), *bytes);
        assert_eq!(lf.size, bytes.len() as u64);
    }
    assert_eq!(lib[0].files[1].language.as_deref(), Some("sv"));
    assert_eq!(lib[0].files[1].role, FileRole::Subtitle);
    assert!(e.sb.violations().is_empty(), "{:?}", e.sb.violations());
    e.sb.shutdown().await;
}

#[tokio::test]
async fn multipart_round_trip_is_byte_identical() {
    // Odd part size so that parts straddle the 1 MiB write buffers.
    let part = 1_500_001u64;
    let e = env(part).await;
    let left = data(4_000_000, 2);
    let right = data(part as usize + 1, 3);
    let g = e
        .start_group("Separate", &[("a_L.mov", "video_left", None, &left), ("a_R.mov", "video_right", None, &right)])
        .await;
    let (sid, uid, f) = file(&g, 0);
    assert_eq!((f["uploadStrategy"].as_str(), f["totalParts"].as_u64()), (Some("multipart"), Some(3)));
    assert_eq!(f["partSizeBytes"], part);
    assert_eq!(g["files"][1]["totalParts"], 2, "one byte over a part is two parts");

    // Part 2 first gets other bytes of the right length; the re-PUT below replaces them.
    let (_, v) = e.part_urls(sid, uid, json!({"partNumbers": [2]})).await;
    let wrong = e.put(v["parts"][0]["url"].as_str().expect("url"), data(part as usize, 99)).await;
    assert_eq!(wrong.status(), 200);
    // Out of order.
    let list = e.upload_parts(sid, f, &left, &[3, 1, 2]).await;
    let (status, done) = e.complete(sid, uid, list).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["libraryId"], Value::Null);

    let (_, ruid, rf) = file(&g, 1);
    let list = e.upload_parts(sid, rf, &right, &[1, 2]).await;
    let (status, done) = e.complete(sid, ruid, list).await;
    assert_eq!((status, done["libraryId"].as_u64()), (200, Some(1)), "{done}");

    let lib = e.sb.library();
    assert_eq!(lib[0].files[0].sha256, sha256_hex(&left));
    assert_eq!(lib[0].files[1].sha256, sha256_hex(&right));
    assert_eq!(std::fs::read(&lib[0].files[0].path).expect("stored"), left);
    let s = &e.sb.sessions()[0];
    assert_eq!(s.status, SessionStatus::Completed);
    assert_eq!(s.files[0].parts_received, vec![1, 2, 3]);
    assert!(e.sb.violations().is_empty(), "{:?}", e.sb.violations());
    e.sb.shutdown().await;
}

#[tokio::test]
async fn part_urls_styles_and_byte_end_identity() {
    let e = env(1000).await;
    let (status, g) = e
        .start(json!({"videoName": "v", "layout": "SBS", "files": [
            {"fileName": "v.mov", "fileRole": "video", "sizeBytes": 25_500},
            {"fileName": "v.m4a", "fileRole": "audio", "sizeBytes": 999, "languageTag": "de"},
        ]}))
        .await;
    assert_eq!(status, 201, "{g}");
    let (sid, uid, f) = file(&g, 0);
    assert_eq!(f["totalParts"], 26);

    let check = |v: &Value, expect: &[u64]| {
        let parts = v["parts"].as_array().expect("parts");
        let numbers: Vec<u64> = parts.iter().map(|p| p["partNumber"].as_u64().expect("n")).collect();
        assert_eq!(numbers, expect);
        for p in parts {
            let n = p["partNumber"].as_u64().expect("n");
            let (s, end, size) = (p["byteStart"].as_u64(), p["byteEnd"].as_u64(), p["sizeBytes"].as_u64());
            let (s, end, size) = (s.expect("start"), end.expect("end"), size.expect("size"));
            assert_eq!(size, end - s + 1, "byteEnd is inclusive");
            assert_eq!(s, (n - 1) * 1000);
            assert_eq!(end, (n * 1000).min(25_500) - 1);
            let exp = jiff::Timestamp::from_str(p["expiresAt"].as_str().expect("expiresAt")).expect("ISO-8601");
            let ttl = exp.duration_since(jiff::Timestamp::now()).as_secs();
            assert!((3590..=3600).contains(&ttl), "URL lives one hour: {ttl}");
        }
        for k in [
            "uploadId",
            "fileRole",
            "fileName",
            "totalBytes",
            "partSizeBytes",
            "totalParts",
            "uploadStrategy",
            "status",
        ] {
            assert!(v.get(k).is_some(), "{k} in {v}");
        }
    };
    use std::str::FromStr;
    let (status, v) = e.part_urls(sid, uid, json!({"partNumbers": [26, 3, 7]})).await;
    assert_eq!(status, 200, "{v}");
    check(&v, &[26, 3, 7]);
    assert_eq!(v["parts"][0]["sizeBytes"], 500, "the last part is short");
    let (status, v) = e.part_urls(sid, uid, json!({"startPartNumber": 1, "count": 10})).await;
    assert_eq!(status, 200, "{v}");
    check(&v, &(1..=10).collect::<Vec<_>>());
    let (status, v) = e.part_urls(sid, uid, json!({"startPartNumber": 20, "count": 10000})).await;
    assert_eq!(status, 200, "a range past the end is clipped: {v}");
    check(&v, &(20..=26).collect::<Vec<_>>());

    for (body, words) in [
        (json!({"startPartNumber": 1, "count": 10001}), "count must be an integer from 1 to 10000"),
        (json!({"startPartNumber": 1, "count": 0}), "count must be"),
        (json!({"startPartNumber": 27, "count": 1}), "startPartNumber 27 is out of range"),
        (json!({"partNumbers": [0]}), "part number 0 is out of range"),
        (json!({"partNumbers": [27]}), "part number 27 is out of range"),
        (json!({"partNumbers": []}), "partNumbers must not be empty"),
        (json!({"partNumbers": [1], "count": 1}), "not both"),
        (json!({"count": 3}), "startPartNumber and count go together"),
        (json!({}), "is multipart (26 parts)"),
    ] {
        let (status, v) = e.part_urls(sid, uid, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["message"].as_str().expect("message").contains(words), "{body}: {v}");
    }
    let (_, auid, af) = file(&g, 1);
    assert_eq!(af["uploadStrategy"], "single_put");
    let (status, v) = e.part_urls(sid, auid, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["parts"][0]["byteEnd"].as_u64(), v["parts"][0]["sizeBytes"].as_u64()), (Some(998), Some(999)));
    let (status, v) = e.call(reqwest::Method::POST, &format!("/{sid}/files/{auid}/part-urls"), None).await;
    assert_eq!(status, 200, "an empty body is {{}}: {v}");
    let (status, _) = e.part_urls(sid, "nope", json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = e.part_urls("nope", auid, json!({})).await;
    assert_eq!(status, 404);
    e.sb.shutdown().await;
}

// ---------------------------------------------------------------- storage rules

/// One small single_put file, its URL, and its bytes.
async fn one_url(e: &Env) -> (String, String, String, Vec<u8>) {
    let bytes = data(5000, 9);
    let g = e.start_group("2D", &[("x.mov", "video", None, &bytes)]).await;
    let (sid, uid, _) = file(&g, 0);
    let (_, v) = e.part_urls(sid, uid, json!({})).await;
    (sid.to_string(), uid.to_string(), v["parts"][0]["url"].as_str().expect("url").to_string(), bytes)
}

async fn assert_expired(resp: reqwest::Response) {
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.expect("body");
    assert!(body.contains("<Code>AccessDenied</Code>") && body.contains("Request has expired"), "{body}");
}

#[tokio::test]
async fn expired_urls_answer_403_and_fresh_ones_work() {
    let e = env(1 << 20).await;
    let (sid, uid, url, bytes) = one_url(&e).await;
    e.sb.advance_clock(Duration::from_secs(3601));
    assert_expired(e.put(&url, bytes.clone()).await).await;
    let (_, v) = e.part_urls(&sid, &uid, json!({})).await;
    let fresh = v["parts"][0]["url"].as_str().expect("url").to_string();
    assert_eq!(e.put(&fresh, bytes.clone()).await.status(), 200);

    e.sb.expire_all_urls();
    assert_expired(e.put(&fresh, bytes.clone()).await).await;
    let (_, v) = e.part_urls(&sid, &uid, json!({})).await;
    let after = v["parts"][0]["url"].as_str().expect("url").to_string();
    assert_eq!(e.put(&after, bytes.clone()).await.status(), 200, "URLs issued after expire_all_urls work");
    assert_eq!(e.sb.stats().forbidden, 2);
    e.sb.shutdown().await;
}

#[tokio::test]
async fn forged_urls_are_refused() {
    let e = env(1 << 20).await;
    let (_, _, url, bytes) = one_url(&e).await;
    let tampered = [
        url.replace("X-Expires=", "X-Expires=9"),
        url.replace("X-Serial=", "X-Serial=9"),
        format!("{}{}", &url[..url.len() - 1], if url.ends_with('0') { '1' } else { '0' }),
        url.split('?').next().expect("path").to_string(),
        url.replace("/objects/", "/objects/x"),
    ];
    for bad in tampered {
        let resp = e.put(&bad, bytes.clone()).await;
        assert_eq!(resp.status(), 403, "{bad}");
        let body = resp.text().await.expect("body");
        assert!(body.contains("SignatureDoesNotMatch"), "{bad}: {body}");
    }
    assert_eq!(e.put(&url, bytes).await.status(), 200, "the genuine URL still works");
    e.sb.shutdown().await;
}

#[tokio::test]
async fn key_on_storage_put_is_recorded() {
    let e = env(1 << 20).await;
    let (_, _, url, bytes) = one_url(&e).await;
    assert!(e.sb.violations().is_empty());
    let resp = e.http.put(&url).header(KEY_HEADER, "super-secret-value").body(bytes).send().await.expect("put");
    assert_eq!(resp.status(), 200, "storage ignores the header, as S3 would");
    let v = e.violations_of(ContractViolationKind::KeyOnStoragePut);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(!v[0].detail.contains("super-secret-value"), "the key itself is never recorded");
    assert!(!v[0].detail.contains("X-Signature"), "nor the URL's signature");
    e.sb.shutdown().await;
}

#[tokio::test]
async fn api_key_is_required_and_missing_key_recorded() {
    let e = env_with(1 << 20, |o| o.api_key = Some(KEY.to_string())).await;
    let resp = e.http.post(e.url("")).json(&base()).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "unauthorized");
    assert_eq!(e.violations_of(ContractViolationKind::MissingKey).len(), 1);

    let resp = e.http.post(e.url("")).header(KEY_HEADER, "wrong").json(&base()).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    let resp = e.http.post(e.url("")).header(KEY_HEADER, "").json(&base()).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    assert_eq!(e.violations_of(ContractViolationKind::MissingKey).len(), 1, "a wrong key is refused, not a violation");
    let (status, _) = e.start(base()).await;
    assert_eq!(status, 201);
    let stats = e.sb.stats();
    assert_eq!((stats.unauthorized, stats.api_count("start", 401), stats.api_count("start", 201)), (3, 3, 1));
    e.sb.shutdown().await;

    // Without a configured key, any non-empty key is accepted.
    let e = env(1 << 20).await;
    let resp = e.http.post(e.url("")).header(KEY_HEADER, "anything").json(&base()).send().await.expect("send");
    assert_eq!(resp.status(), 201);
    let resp = e.http.delete(e.url("/whatever")).send().await.expect("send");
    assert_eq!(resp.status(), 401);
    assert_eq!(e.violations_of(ContractViolationKind::MissingKey).len(), 1);
    e.sb.shutdown().await;
}

/// A hand-written request, for what reqwest would not send.
async fn raw(url: &str, head: &str, body: &[u8], close_write: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = reqwest::Url::parse(url).expect("url");
    let pq = format!("{}?{}", u.path(), u.query().unwrap_or_default());
    let host = format!("{}:{}", u.host_str().expect("host"), u.port().expect("port"));
    let mut s = tokio::net::TcpStream::connect(&host).await.expect("connect");
    let req = format!("PUT {pq} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{head}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let _ = s.write_all(body).await;
    if close_write {
        let _ = s.shutdown().await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn content_length_must_match_and_chunked_is_refused() {
    let e = env(1 << 20).await;
    let (sid, uid, url, bytes) = one_url(&e).await;
    let short = raw(&url, "Content-Length: 10\r\n", &bytes[..10], false).await;
    assert!(short.starts_with("HTTP/1.1 400"), "{short}");
    assert!(short.contains("Content-Length 10 does not match the size of part 1 (5000 bytes)"), "{short}");
    let chunked = raw(&url, "Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", false).await;
    assert!(chunked.starts_with("HTTP/1.1 411"), "{chunked}");
    assert!(chunked.contains("MissingContentLength"), "{chunked}");
    // And through reqwest's streaming body, which carries no length.
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes.clone())]);
    let resp = e.http.put(&url).body(reqwest::Body::wrap_stream(stream)).send().await.expect("put");
    assert_eq!(resp.status(), 411);
    let (status, v) = e.complete(&sid, &uid, json!({})).await;
    assert_eq!(status, 400, "nothing was stored: {v}");
    assert_eq!(e.put(&url, bytes).await.status(), 200);
    e.sb.shutdown().await;
}

// ---------------------------------------------------------------- complete

#[tokio::test]
async fn complete_refuses_missing_unsorted_and_wrong_parts() {
    let e = env(1000).await;
    let bytes = data(3500, 4);
    let g = e.start_group("TB", &[("t.mov", "video", None, &bytes)]).await;
    let (sid, uid, f) = file(&g, 0);
    let full = e.upload_parts(sid, f, &bytes, &[1, 2, 3, 4]).await;
    let p = full["parts"].as_array().expect("parts").clone();

    let cases = [
        (json!({}), ContractViolationKind::MissingParts, "parts is required for a multipart file"),
        (json!({"parts": [p[0], p[1], p[2]]}), ContractViolationKind::MissingParts, "missing: 4"),
        (
            json!({"parts": [p[0], p[2], p[1], p[3]]}),
            ContractViolationKind::UnsortedParts,
            "ascending partNumber order",
        ),
        (json!({"parts": [p[0], p[1], p[1], p[2], p[3]]}), ContractViolationKind::UnsortedParts, "each once"),
        (
            json!({"parts": [p[0], p[1], {"partNumber": 3, "etag": p[0]["etag"]}, p[3]]}),
            ContractViolationKind::EtagMismatch,
            "the ETag given for part 3",
        ),
    ];
    for (i, (body, kind, words)) in cases.iter().enumerate() {
        let (status, v) = e.complete(sid, uid, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["message"].as_str().expect("message").contains(words), "{body}: {v}");
        let seen = e.sb.violations();
        assert_eq!(seen.len(), i + 1);
        assert_eq!(seen[i].kind, *kind, "{seen:?}");
    }
    let (status, v) = e.complete(sid, uid, json!({"parts": [{"partNumber": 1}]})).await;
    assert_eq!(status, 400, "{v}");

    // A part whose re-PUT never finished cannot be completed.
    let (_, urls) = e.part_urls(sid, uid, json!({"partNumbers": [2]})).await;
    let url = urls["parts"][0]["url"].as_str().expect("url");
    let cut = raw(url, "Content-Length: 1000\r\n", &bytes[1000..1400], true).await;
    assert!(cut.is_empty() || !cut.starts_with("HTTP/1.1 200"), "{cut}");
    let (status, v) = e.complete(sid, uid, full.clone()).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().expect("message").contains("part 2 was never uploaded"), "{v}");

    let _ = e.upload_parts(sid, f, &bytes, &[2]).await;
    let unquoted = with(full.clone(), |v| {
        for p in v["parts"].as_array_mut().expect("parts") {
            p["etag"] = json!(p["etag"].as_str().expect("etag").trim_matches('"'));
        }
    });
    let (status, v) = e.complete(sid, uid, unquoted).await;
    assert_eq!(status, 200, "ETags are accepted without their quotes too: {v}");
    assert_eq!(e.sb.library()[0].files[0].sha256, sha256_hex(&bytes));
    e.sb.shutdown().await;
}

#[tokio::test]
async fn complete_is_idempotent_and_library_id_only_on_last() {
    let e = env(1 << 20).await;
    let (a, b, c) = (data(10, 5), data(20, 6), data(30, 7));
    let mut library_ids = Vec::new();
    for round in 0..2 {
        let g = e
            .start_group(
                "MVHEVC",
                &[
                    ("m.mov", "video", None, &a),
                    ("m.m4a", "audio", Some("zxx"), &b),
                    ("m.srt", "subtitle", Some("en"), &c),
                ],
            )
            .await;
        let sid = g["sessionId"].as_str().expect("sid");
        let mut answers = Vec::new();
        for (i, bytes) in [&a, &b, &c].into_iter().enumerate() {
            let (_, uid, f) = file(&g, i);
            let _ = e.upload_parts(sid, f, bytes, &[1]).await;
            let (status, first) = e.complete(sid, uid, json!({})).await;
            assert_eq!(status, 200, "{first}");
            let (status, again) = e.complete(sid, uid, json!({})).await;
            assert_eq!(status, 200, "{again}");
            assert_eq!(first, again, "repeating complete returns the same state");
            answers.push(first);
        }
        assert_eq!(answers[0]["libraryId"], Value::Null);
        assert_eq!(answers[1]["libraryId"], Value::Null);
        let id = answers[2]["libraryId"].as_u64().expect("library id on the last complete");
        library_ids.push(id);
        // After the group completed, repeating an earlier complete tells the id too.
        let (_, uid0, _) = file(&g, 0);
        let (status, v) = e.complete(sid, uid0, json!({})).await;
        assert_eq!((status, v["libraryId"].as_u64()), (200, Some(id)), "round {round}");
        let (status, v) = e.part_urls(sid, uid0, json!({})).await;
        assert_eq!(status, 409, "no URLs for a completed file: {v}");
        let (status, _) = e.cancel(sid).await;
        assert_eq!(status, 409, "a completed group cannot be canceled");
    }
    assert_eq!(library_ids, vec![1, 2], "library ids count from 1");
    assert_eq!(e.sb.library().len(), 2);
    assert!(e.sb.violations().is_empty(), "{:?}", e.sb.violations());
    e.sb.shutdown().await;
}

#[tokio::test]
async fn complete_waits_for_puts_in_flight() {
    use tokio::io::AsyncWriteExt;
    let e = env(1 << 20).await;
    let (sid, uid, url, bytes) = one_url(&e).await;
    assert_eq!(e.put(&url, bytes.clone()).await.status(), 200);
    // A re-PUT that has sent half its body and stalls.
    let u = reqwest::Url::parse(&url).expect("url");
    let host = format!("{}:{}", u.host_str().expect("host"), u.port().expect("port"));
    let mut s = tokio::net::TcpStream::connect(&host).await.expect("connect");
    let head = format!(
        "PUT {}?{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n",
        u.path(),
        u.query().expect("query"),
        bytes.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&bytes[..2500]).await.expect("half");
    eventually("the PUT to start", || !e.sb.sessions()[0].files[0].parts_in_flight.is_empty()).await;
    let (status, v) = e.complete(&sid, &uid, json!({})).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["message"].as_str().expect("message").contains("still in progress"), "{v}");
    s.write_all(&bytes[2500..]).await.expect("rest");
    eventually("the PUT to end", || e.sb.sessions()[0].files[0].parts_in_flight.is_empty()).await;
    assert_eq!(e.complete(&sid, &uid, json!({})).await.0, 200);
    assert!(e.sb.violations().is_empty(), "{:?}", e.sb.violations());
    e.sb.shutdown().await;
}

// ---------------------------------------------------------------- cancel, expiry

#[tokio::test]
async fn cancel_and_calls_after_cancel() {
    let e = env(1000).await;
    let bytes = data(2500, 8);
    let g = e.start_group("2D", &[("c.mov", "video", None, &bytes), ("c.srt", "subtitle", Some("it"), b"x")]).await;
    let (sid, uid, f) = file(&g, 0);
    let list = e.upload_parts(sid, f, &bytes, &[1, 2, 3]).await;
    let (_, sub_uid, sub) = file(&g, 1);
    let _ = e.upload_parts(sid, sub, b"x", &[1]).await;
    let (status, _) = e.complete(sid, sub_uid, json!({})).await;
    assert_eq!(status, 200);
    let (_, urls) = e.part_urls(sid, uid, json!({"partNumbers": [1]})).await;

    let (status, v) = e.cancel(sid).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["sessionId"].as_str(), v["status"].as_str()), (Some(sid), Some("canceled")));
    assert_eq!((v["fileCount"].as_u64(), v["canceledFileCount"].as_u64()), (Some(2), Some(1)));
    assert!(v["canceledAt"].is_string());
    let s = &e.sb.sessions()[0];
    assert_eq!(s.status, SessionStatus::Canceled);
    assert!(s.files.iter().all(|f| f.status == FileStatus::Canceled));
    assert!(!e._dir.path().join("objects").join(uid).exists(), "partial objects are deleted");

    let (status, v) = e.cancel(sid).await;
    assert_eq!(status, 409, "canceling again answers 409: {v}");
    assert!(e.sb.violations().is_empty(), "a repeated cancel is not a violation");
    let (status, _) = e.cancel("00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, 404);

    let (status, v) = e.part_urls(sid, uid, json!({"partNumbers": [1]})).await;
    assert_eq!(status, 409, "{v}");
    let (status, v) = e.complete(sid, uid, list).await;
    assert_eq!(status, 409, "{v}");
    let after = e.violations_of(ContractViolationKind::CallAfterCancel);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after[0].detail.contains("part-urls") && after[1].detail.contains("complete"));

    let resp = e.put(urls["parts"][0]["url"].as_str().expect("url"), bytes[..1000].to_vec()).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.expect("body").contains("NoSuchUpload"));
    e.sb.shutdown().await;
}

#[tokio::test]
async fn groups_expire_five_days_after_creation() {
    let e = env(1 << 20).await;
    let bytes = data(100, 10);
    let g = e.start_group("2D", &[("e.mov", "video", None, &bytes)]).await;
    let (sid, uid, _) = file(&g, 0);
    let expires = jiff::Timestamp::from_str(g["expiresAt"].as_str().expect("expiresAt")).expect("ISO");
    let days = expires.duration_since(jiff::Timestamp::now()).as_secs_f64() / 86_400.0;
    assert!((4.99..=5.0).contains(&days), "{days}");
    use std::str::FromStr;

    e.sb.advance_clock(GROUP_LIFETIME - Duration::from_secs(60));
    let (status, v) = e.part_urls(sid, uid, json!({})).await;
    assert_eq!(status, 200, "still alive a minute before: {v}");
    e.sb.advance_clock(Duration::from_secs(61));
    let (status, v) = e.part_urls(sid, uid, json!({})).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["message"].as_str().expect("message").contains("expired"));
    let (status, _) = e.complete(sid, uid, json!({})).await;
    assert_eq!(status, 404);
    let (status, _) = e.cancel(sid).await;
    assert_eq!(status, 404);
    assert_eq!(e.sb.sessions()[0].status, SessionStatus::Expired);
    assert!(!e._dir.path().join("objects").join(uid).exists(), "partial files are deleted");
    assert!(e.sb.violations().is_empty());
    // A new group works as usual.
    let g = e.start_group("2D", &[("e.mov", "video", None, &bytes)]).await;
    let (sid, uid, f) = file(&g, 0);
    let _ = e.upload_parts(sid, f, &bytes, &[1]).await;
    assert_eq!(e.complete(sid, uid, json!({})).await.0, 200);
    e.sb.shutdown().await;
}

// ---------------------------------------------------------------- faults

#[tokio::test]
async fn api_faults_5xx_and_429_with_retry_after() {
    let e = env(1 << 20).await;
    e.sb.set_faults(Faults { api_5xx: 1.0, ..Faults::default() });
    let (status, v) = e.start(base()).await;
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["error"], "internal_error");
    e.sb.set_faults(Faults { rate_limit: 1.0, retry_after: Duration::from_millis(2500), ..Faults::default() });
    let resp = e.http.post(e.url("")).header(KEY_HEADER, KEY).json(&base()).send().await.expect("send");
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3", "whole seconds, rounded up");
    e.sb.set_faults(Faults::default());
    assert_eq!(e.start(base()).await.0, 201);
    let stats = e.sb.stats();
    assert_eq!((stats.fault_count("api_5xx"), stats.fault_count("rate_limit")), (1, 1));
    assert_eq!(
        (stats.api_count("start", 500), stats.api_count("start", 429), stats.api_count("start", 201)),
        (1, 1, 1)
    );
    assert_eq!(e.sb.sessions().len(), 1, "faulted calls created nothing");
    e.sb.shutdown().await;
}

#[tokio::test]
async fn put_faults_5xx_reset_and_corrupt_etag() {
    let e = env(4 << 20).await;
    let bytes = data(3 << 20, 11);
    let (sid, uid, url, _) = {
        let g = e.start_group("2D", &[("f.mov", "video", None, &bytes)]).await;
        let (sid, uid, _) = file(&g, 0);
        let (_, v) = e.part_urls(sid, uid, json!({})).await;
        (sid.to_string(), uid.to_string(), v["parts"][0]["url"].as_str().expect("url").to_string(), ())
    };

    e.sb.set_faults(Faults { put_5xx: 1.0, ..Faults::default() });
    let resp = e.put(&url, bytes.clone()).await;
    assert_eq!(resp.status(), 500);
    assert!(resp.text().await.expect("body").contains("<Code>InternalError</Code>"));

    e.sb.set_faults(Faults { reset_mid_body: 1.0, ..Faults::default() });
    let fresh = reqwest::Client::builder().no_proxy().build().expect("client");
    let err = fresh.put(&url).body(bytes.clone()).send().await;
    assert!(err.is_err(), "the connection was dropped mid-body: {:?}", err.map(|r| r.status()));

    e.sb.set_faults(Faults { corrupt_etag: 1.0, ..Faults::default() });
    let resp = e.put(&url, bytes.clone()).await;
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
    assert_ne!(etag, md5_etag(&bytes), "the ETag is wrong");
    assert_eq!(etag.len(), 34, "but still looks like one");
    let (status, _) = e.complete(&sid, &uid, json!({"parts": [{"partNumber": 1, "etag": etag}]})).await;
    assert_eq!(status, 400, "the bytes were stored, the ETag does not match them");

    e.sb.set_faults(Faults::default());
    let (status, v) = e.complete(&sid, &uid, json!({"parts": [{"partNumber": 1, "etag": md5_etag(&bytes)}]})).await;
    assert_eq!(status, 200, "{v}");
    let stats = e.sb.stats();
    for kind in ["put_5xx", "reset_mid_body", "corrupt_etag"] {
        assert_eq!(stats.fault_count(kind), 1, "{kind}");
    }
    assert_eq!(stats.storage.get(&500), Some(&1));
    assert!(stats.put_bytes >= 2 * bytes.len() as u64 + bytes.len() as u64 / 2, "{stats:?}");
    assert_eq!(e.sb.library()[0].files[0].sha256, sha256_hex(&bytes));
    e.sb.shutdown().await;
}

#[tokio::test]
async fn latency_delays_api_calls_and_puts() {
    let e = env(1 << 20).await;
    let (_, _, url, bytes) = one_url(&e).await;
    e.sb.set_faults(Faults { latency: Duration::from_millis(300), ..Faults::default() });
    let t = Instant::now();
    assert_eq!(e.start(base()).await.0, 201);
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(e.put(&url, bytes).await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
    e.sb.shutdown().await;
}

#[tokio::test]
async fn seeded_faults_are_deterministic() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let e = env(1 << 20).await;
        e.sb.set_faults(Faults { api_5xx: 0.5, seed: Some(42), ..Faults::default() });
        let mut statuses = Vec::new();
        for _ in 0..24 {
            statuses.push(e.cancel("unknown").await.0);
        }
        runs.push(statuses);
        e.sb.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&500) && runs[0].contains(&404), "{:?}", runs[0]);
}

// ---------------------------------------------------------------- admin

#[tokio::test]
async fn admin_endpoints_work_without_a_key() {
    let e = env(1 << 20).await;
    let admin = |p: &str| format!("{}/_sandbox/{p}", e.sb.base_url());
    let (sid, uid, url, bytes) = one_url(&e).await;

    let resp = e.http.post(admin("faults")).json(&json!({"api_5xx": 1.0, "retry_after_ms": 1000})).send().await;
    assert_eq!(resp.expect("faults").status(), 200);
    assert_eq!(e.sb.faults().api_5xx, 1.0);
    assert_eq!(e.sb.faults().retry_after, Duration::from_secs(1));
    assert_eq!(e.start(base()).await.0, 500);
    let resp = e.http.post(admin("faults")).json(&json!({"api_5xxx": 1.0})).send().await.expect("faults");
    assert_eq!(resp.status(), 400, "unknown fault names are refused");
    let resp = e.http.post(admin("faults")).json(&json!({})).send().await.expect("faults");
    assert_eq!(resp.status(), 200);

    let resp = e.http.post(admin("expire-urls")).send().await.expect("expire");
    assert_eq!(resp.status(), 200);
    assert_expired(e.put(&url, bytes.clone()).await).await;

    let resp = e.http.post(admin("advance-clock")).json(&json!({"seconds": 6 * 86_400})).send().await;
    assert_eq!(resp.expect("clock").status(), 200);
    assert_eq!(e.part_urls(&sid, &uid, json!({})).await.0, 404, "expired by the advanced clock");

    let state: Value = e.http.get(admin("state")).send().await.expect("state").json().await.expect("json");
    assert_eq!(state["sessions"][0]["status"], "expired");
    assert_eq!(state["sessions"][0]["id"], sid.as_str());
    assert!(state["library"].as_array().expect("library").is_empty());
    assert!(state["violations"].as_array().expect("violations").is_empty());
    assert_eq!(state["stats"]["api"]["start"]["500"], 1);
    assert_eq!(state["stats"]["forbidden"], 1);
    assert_eq!(state["storage"], e.sb.storage_url().as_str());
    let resp = e.http.post(admin("advance-clock")).json(&json!({"seconds": -1})).send().await.expect("clock");
    assert_eq!(resp.status(), 400);
    e.sb.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_both_listeners() {
    let e = env(1 << 20).await;
    let (base_url, storage) = (e.sb.base_url(), e.sb.storage_url());
    let other = e.sb.clone();
    e.sb.shutdown().await;
    drop(other);
    let fresh = reqwest::Client::builder().no_proxy().build().expect("client");
    assert!(fresh.get(format!("{base_url}/_sandbox/state")).send().await.is_err());
    assert!(fresh.put(format!("{storage}/objects/x")).body("x").send().await.is_err());
}

// ---------------------------------------------------------------- call log

#[tokio::test]
async fn the_call_log_names_the_key_and_group_of_every_call_and_put() {
    let e = env_with(1000, |o| {
        o.api_key = Some("key-a".into());
        o.extra_keys = vec!["key-b".into()];
    })
    .await;
    let t0 = Instant::now();
    let bytes = data(2500, 7);
    let files = json!([{"fileName": "v.mov", "fileRole": "video", "sizeBytes": bytes.len()}]);
    let (status, g) = e
        .call_as("key-a", reqwest::Method::POST, "", Some(json!({"videoName": "v", "layout": "2D", "files": files})))
        .await;
    assert_eq!(status, 201, "{g}");
    let (sid, uid, _) = file(&g, 0);
    let urls = format!("/{sid}/files/{uid}/part-urls");
    // Node a asks for every URL; node b for part 3 again.
    let (_, va) = e.call_as("key-a", reqwest::Method::POST, &urls, Some(json!({"partNumbers": [1, 2, 3]}))).await;
    let (_, vb) = e.call_as("key-b", reqwest::Method::POST, &urls, Some(json!({"partNumbers": [3]}))).await;
    let url = |v: &Value, i: usize| v["parts"][i]["url"].as_str().expect("url").to_string();
    let mut etags = Vec::new();
    for (u, range) in [(url(&va, 0), 0..1000), (url(&va, 1), 1000..2000), (url(&vb, 0), 2000..2500)] {
        let resp = e.put(&u, bytes[range].to_vec()).await;
        assert_eq!(resp.status(), 200);
        etags.push(resp.headers()["etag"].to_str().expect("etag").to_string());
    }
    // A URL the server did not sign: logged, with no caller.
    let forged = url(&va, 0).replace("X-Signature=", "X-Signature=00");
    assert_eq!(e.put(&forged, bytes[..1000].to_vec()).await.status(), 403);
    // A key the server does not accept: logged under that key, refused.
    let parts: Vec<Value> = etags.iter().enumerate().map(|(i, t)| json!({"partNumber": i + 1, "etag": t})).collect();
    let complete = format!("/{sid}/files/{uid}/complete");
    let (status, _) = e.call_as("key-c", reqwest::Method::POST, &complete, Some(json!({"parts": parts}))).await;
    assert_eq!(status, 401);
    let (status, done) = e.call_as("key-b", reqwest::Method::POST, &complete, Some(json!({"parts": parts}))).await;
    assert_eq!(status, 200, "{done}");
    let (status, _) = e.call_as("key-a", reqwest::Method::DELETE, &format!("/{sid}"), None).await;
    assert_eq!(status, 409, "a completed group cannot be canceled");

    let calls = e.sb.calls();
    let seen: Vec<(&str, &str, Option<&str>)> =
        calls.iter().map(|c| (c.caller.as_str(), c.endpoint, c.session.as_deref())).collect();
    let s = Some(sid);
    assert_eq!(
        seen,
        vec![
            ("key-a", "start", s),
            ("key-a", "part-urls", s),
            ("key-b", "part-urls", s),
            ("key-a", "put", s),
            ("key-a", "put", s),
            ("key-b", "put", s),
            ("", "put", s),
            ("key-c", "complete", s),
            ("key-b", "complete", s),
            ("key-a", "cancel", s),
        ]
    );
    assert!(calls.windows(2).all(|w| w[0].at <= w[1].at), "in the order they arrived");
    assert!(calls[0].at >= t0 && calls[calls.len() - 1].at <= Instant::now());
    // A refused start, and a PUT for an upload the server does not know.
    let (status, _) = e.call_as("key-a", reqwest::Method::POST, "", Some(json!({"videoName": ""}))).await;
    assert_eq!(status, 422);
    let last = e.sb.calls().pop().expect("logged");
    assert_eq!((last.caller.as_str(), last.endpoint, last.session), ("key-a", "start", None));
    e.sb.shutdown().await;
}

#[tokio::test]
async fn complete_latency_holds_complete_calls_after_they_are_logged() {
    let e = env(1 << 20).await;
    let (sid, uid, url, bytes) = one_url(&e).await;
    assert_eq!(e.put(&url, bytes).await.status(), 200);
    e.sb.set_faults(Faults { complete_latency: Duration::from_millis(400), ..Faults::default() });
    // Other calls are not held.
    let t = Instant::now();
    assert_eq!(e.start(base()).await.0, 201);
    assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
    let t = Instant::now();
    let path = format!("{}/api/videos/uploads/{sid}/files/{uid}/complete", e.sb.base_url());
    let call = e.http.post(path).header(KEY_HEADER, KEY).json(&json!({})).send();
    let answer = tokio::spawn(call);
    let arrived = |sb: &Sandbox| sb.calls().iter().any(|c| c.endpoint == "complete");
    eventually("the complete call in the log", || arrived(&e.sb)).await;
    assert_eq!(e.sb.sessions().iter().find(|s| s.id == sid).expect("session").status, SessionStatus::Pending);
    let resp = answer.await.expect("task").expect("complete");
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    assert_eq!(e.sb.sessions().iter().find(|s| s.id == sid).expect("session").status, SessionStatus::Completed);
    let json: Faults = serde_json::from_value(json!({"complete_latency_ms": 250})).expect("faults JSON");
    assert_eq!(json.complete_latency, Duration::from_millis(250));
    e.sb.shutdown().await;
}

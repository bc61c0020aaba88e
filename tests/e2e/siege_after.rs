//! A completed group whose after-upload step fails and will be tried again
//! is visible at once: the real `run` binary moves an export into a
//! `move_to` folder that is full, and `status`, `status --json` and `show
//! --json` say so (the reason, the attempt, the next try) while the group
//! stays `completed` and the export stays where it was.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spatialgen_sync::journal::GroupState;
use spatialgen_sync::journal::prelude::*;

use fantoccini::Locator;

use crate::agent::{Agent, drop_folder, free_port, publish, row, wait_state, watch_table};
use crate::console::{browser, driver, text_of};
use crate::support::*;

const MIB: usize = 1024 * 1024;

/// How `move_to` was made to refuse the export.
enum Full {
    /// A 1 MiB tmpfs mounted on it (unmounted on drop): the copy runs out
    /// of space, `No space left on device`.
    Tmpfs(PathBuf),
    /// No mount allowed here (EPERM): a regular file where the export's
    /// folder would be created inside `move_to` (as root, permissions would
    /// not stop the write; a file in the way does), `File exists`.
    FileInTheWay,
}

impl Full {
    /// The words the after-upload error must contain.
    fn reason(&self) -> &'static str {
        match self {
            Full::Tmpfs(_) => "No space left on device",
            Full::FileInTheWay => "File exists",
        }
    }
}

impl Drop for Full {
    fn drop(&mut self) {
        if let Full::Tmpfs(dir) = self {
            let _ = Command::new("umount").arg("-l").arg(&*dir).status();
        }
    }
}

/// Make `dir` (an existing, empty folder) refuse an export named `export` of more than 1 MiB.
fn make_full(dir: &Path, export: &str) -> Full {
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        return Full::Tmpfs(dir.to_path_buf());
    }
    eprintln!("mounting a tmpfs was refused here; a file in the way stands in for the full disk");
    std::fs::write(dir.join(export), b"in the way").unwrap();
    Full::FileInTheWay
}

fn json(out: &Run) -> serde_json::Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// A running agent whose `move_to` is full, with one completed export
/// waiting for its after-upload retry.
struct Siege {
    w: World,
    agent: Agent,
    journal: std::sync::Arc<spatialgen_sync::journal::Journal>,
    export: PathBuf,
    moved: PathBuf,
    config: String,
    /// The console's port.
    port: u16,
    full: Full,
}

async fn siege() -> Siege {
    let w = World::new(256 * 1024, "").await;
    let folder = drop_folder(&w, "drop");
    let moved = w.dir.path().join("uploaded");
    std::fs::create_dir_all(&moved).unwrap();
    let full = make_full(&moved, "big");
    let port = free_port();
    w.write_config(
        "",
        &format!(
            "{}after_upload = \"move\"\nmove_to = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            watch_table(&folder),
            moved.display()
        ),
    );
    let config = w.config_path.to_str().unwrap().to_string();
    let agent = Agent::start(&w);
    let journal = w.journal();
    let export = publish(&w, &folder, "big", &[("v.mov", 2 * MIB)]);
    wait_state(&journal, &export, GroupState::Completed, Duration::from_secs(60)).await;
    wait_for_then(
        Duration::from_secs(30),
        || row(&journal, &export).is_some_and(|r| r.after_upload.is_some()),
        || format!("a pending after-upload retry; agent output:\n{}", agent.log()),
    )
    .await;
    Siege { w, agent, journal, export, moved, config, port, full }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_move_to_disk_shows_as_a_pending_after_upload_retry_and_loses_nothing() {
    let Siege { w, agent, journal, export, moved, config, port: _, full } = siege().await;

    // status --json: a field of its own, and the row's `error` for scripts that read only that.
    let rows = json(&w.run(KEY, &["status", "--config", &config, "--json"]).await);
    let r = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == export.display().to_string())
        .unwrap_or_else(|| panic!("no row for the export: {rows}"));
    assert_eq!(r["state"], "completed", "{r}");
    let a = &r["afterUpload"];
    assert_eq!(a["failures"], 1, "{r}");
    assert_eq!(a["attempts"], 6, "{r}");
    let error = a["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("move to {}: ", moved.display())), "{r}");
    assert!(error.contains(full.reason()), "{r}");
    let next: jiff::Timestamp = a["nextAttempt"].as_str().unwrap_or_default().parse().expect("RFC 3339");
    let now = jiff::Timestamp::now();
    assert!(next > now && next <= now + jiff::SignedDuration::from_secs(61), "next try within the first delay: {r}");
    let row_error = r["error"].as_str().unwrap_or_default();
    assert!(row_error.starts_with("after-upload step failed (attempt 1 of 6): move to "), "{r}");
    assert!(row_error.contains(full.reason()) && row_error.contains("; next try "), "{r}");

    // status: a line under the group's row.
    let text = w.run(KEY, &["status", "--config", &config]).await;
    assert_eq!(text.code, Some(0), "{text:?}");
    let line = text
        .stdout
        .lines()
        .find(|l| l.contains("after-upload step failed"))
        .unwrap_or_else(|| panic!("no after-upload line: {}", text.stdout));
    assert!(line.trim_start().starts_with("completed · after-upload step failed (attempt 1 of 6): "), "{line}");
    assert!(line.contains(full.reason()) && line.contains("; next try "), "{line}");

    // show --json: the same object.
    let id = r["id"].as_i64().unwrap().to_string();
    let shown = json(&w.run(KEY, &["show", "--config", &config, "--json", &id]).await);
    assert_eq!(shown["afterUpload"], *a, "{shown}");

    // Nothing lost: the export is where it was, whole; the full disk holds no part of it.
    let source = container_for("v.mov", "big/v.mov", 2 * MIB).unwrap();
    assert!(std::fs::read(export.join("v.mov")).unwrap() == source, "the export is whole");
    if let Full::Tmpfs(dir) = &full {
        let copied = dir.join("big/v.mov");
        assert!(!copied.exists(), "no partial copy left at {}", copied.display());
    }
    assert_eq!(journal.group(r["id"].as_i64().unwrap()).unwrap().state, GroupState::Completed);
    agent.stop().await;
    drop(full);
}

/// The console page (in a real browser) words the pending retry as `status`
/// does, in the completed group's card under "Needs attention" and in its
/// detail.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_after_upload_retry_shows_on_the_console_page() {
    let s = siege().await;
    let id = row(&s.journal, &s.export).unwrap().id;
    let d = driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&d, profile.path()).await;
    c.goto(&format!("http://127.0.0.1:{}/", s.port)).await.unwrap();
    // Under "Needs attention", not among the completed ones.
    let card = format!("#attention .group[data-group-id=\"{id}\"]");
    let line = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(&format!("{card} .after-upload")))
        .await
        .expect("the card's after-upload line");
    let text = line.text().await.unwrap_or_default();
    assert!(text.starts_with("completed · after-upload step failed (attempt 1 of 6): move to "), "{text}");
    assert!(text.contains(s.full.reason()) && text.contains("; next try "), "{text}");
    assert!(text_of(&c, &format!("{card} .error")).await.is_none(), "the same words are not repeated as an error");
    let in_done = format!("#done .group[data-group-id=\"{id}\"]");
    assert!(c.find(Locator::Css(&in_done)).await.is_err(), "not listed as done while its step is pending");

    c.find(Locator::Css(&format!("{card} .name"))).await.unwrap().click().await.unwrap();
    let detail = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#detail-panel .after-upload"))
        .await
        .expect("the detail's after-upload line");
    assert_eq!(detail.text().await.unwrap_or_default(), text);
    c.close().await.unwrap();
    s.agent.stop().await;
    drop(s.full);
    drop(s.w);
}

//! `spatialgen-sync plan --config FILE [--json] [PATH]`: the groups the agent
//! would form, each with its layout, perspective, files (role, language,
//! size) and every rule it breaks. Nothing is sent and nothing is written
//! (bundle zips are sized, not staged). Exit 1 if any group would be rejected.
//!
//! Without PATH every `[[watch]]` folder is planned as the agent would see it.
//! With PATH: the settings of the watch folder that contains PATH apply (or
//! the defaults, if none does); in flat mode PATH is a drop folder; in
//! folders mode PATH is one export if it directly holds a video file, else a
//! folder of exports (each direct subfolder is one).
//!
//! # `--json`
//!
//! One JSON object. The shape is stable: fields may be added, none is renamed
//! or removed.
//!
//! ```json
//! {
//!   "groups": [
//!     {
//!       "name": "Shot_010",                      // videoName
//!       "key": "/renders/exports/Shot_010",      // export identity (flat mode: <drop folder>/<stem>)
//!       "root": "/renders/exports/Shot_010",     // folder the file paths are relative to
//!       "watchPath": "/renders/exports",         // or null
//!       "layout": "Separate",                    // 2D | MVHEVC | SBS | TB | Separate | AIV
//!       "perspective": "Regular",                // Regular | 180 | 360, or null
//!       "description": null,                     // string or null
//!       "folderName": null,                      // string or null
//!       "priority": 0,
//!       "fingerprint": "9f2c…",                  // 64 hex digits
//!       "totalBytes": 2147483648,
//!       "valid": false,                          // false = would be rejected, never sent
//!       "ready": false,                          // valid and nothing still being written
//!       "mediaCheck": "reject",                  // reject | warn | off
//!       "files": [
//!         { "path": "Shot_010_L.mov", "fileName": "Shot_010_L.mov", "role": "video_left",
//!           "language": null, "sizeBytes": 1073741824,
//!           "media": { "container": "quicktime", "durationMs": 10010, "width": 1920, "height": 1080,
//!                      "frameRate": 29.97, "codec": "hvc1", "views": 1, "heroEye": null,
//!                      "baselineMm": null, "hfovDeg": null, "projection": null, "packing": null,
//!                      "audioChannels": 2, "sampleRate": 48000 } }
//!       ],
//!       "violations": [
//!         { "rule": "separate-needs-left-and-right", "file": null,
//!           "message": "layout Separate needs exactly one right-eye video …" }
//!       ],
//!       "unfinished": [],                        // containers still being written (same shape)
//!       "warnings": []                           // media findings with media_check = "warn"
//!     }
//!   ],
//!   "ready": 0,                                  // groups that would be uploaded
//!   "rejected": 1,                               // groups that would be rejected
//!   "waiting": 0                                 // valid groups still being written
//! }
//! ```
//!
//! `files[].path` is relative to `root` with `/` separators (a `.fcpxmld`
//! bundle directory keeps its directory name here, while `fileName` is the
//! `.zip` the agent uploads); `language` is set exactly for audio and
//! subtitle files; `violations[].rule` is a stable id (see `group::rules`).
//! `media` is present for the files the media check looked into (see
//! `media::MediaFacts`; `null` for what the file does not say).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{Outcome, UsageError};
use crate::config::{Config, ConfigError, WatchConfig, WatchMode};
use crate::group::{self, GroupError, GroupOptions, RoleMatcher, UploadGroup, Violation};
use crate::media::MediaFacts;

pub fn run(args: super::PlanArgs) -> anyhow::Result<Outcome> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(args, &mut out)
}

/// [`run`], writing to `out`.
pub fn run_to(args: super::PlanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    let groups = match &args.path {
        Some(path) => plan_path(&cfg, path)?,
        None => plan_config(&cfg)?,
    };
    if args.json {
        render_json(&groups, out)?;
    } else {
        render_text(&groups, out)?;
    }
    out.flush()?;
    Ok(if groups.iter().all(UploadGroup::is_valid) { Outcome::Success } else { Outcome::WorkFailed })
}

/// A grouping error that comes from the config (a bad pattern, a missing
/// watch folder) is a config error: exit 2.
fn config_problem(i: usize, e: GroupError) -> anyhow::Error {
    let key = match &e {
        GroupError::Pattern { role, .. } => format!("watch[{i}].roles.{role}"),
        _ => format!("watch[{i}].path"),
    };
    ConfigError::Invalid(vec![format!("{key}: {e}")]).into()
}

fn plan_config(cfg: &Config) -> anyhow::Result<Vec<UploadGroup>> {
    if cfg.watch.is_empty() {
        return Err(UsageError(format!(
            "{} has no [[watch]] folders; add one, or give a folder to plan: spatialgen-sync plan --config FILE PATH",
            cfg.source.display()
        ))
        .into());
    }
    let mut groups = Vec::new();
    for (i, w) in cfg.watch.iter().enumerate() {
        groups.extend(group::plan_watch(w, None).map_err(|e| config_problem(i, e))?);
    }
    Ok(groups)
}

/// The watch folder PATH lies in (the deepest one), and PATH spelled from it,
/// so that keys read as the running agent would write them.
fn watch_for(cfg: &Config, path: &Path) -> (Option<usize>, PathBuf) {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let target = canon(path);
    let best = cfg
        .watch
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let base = canon(&w.path);
            target.strip_prefix(&base).ok().map(|rest| (i, base.components().count(), w.path.join(rest)))
        })
        .max_by_key(|(_, depth, _)| *depth);
    match best {
        Some((i, _, spelled)) => (Some(i), spelled),
        None => (None, target),
    }
}

fn plan_path(cfg: &Config, path: &Path) -> anyhow::Result<Vec<UploadGroup>> {
    if !path.is_dir() {
        return Err(UsageError(format!("{} is not a folder", path.display())).into());
    }
    let (index, path) = watch_for(cfg, path);
    let fallback;
    let (watch, i): (&WatchConfig, usize) = match index {
        Some(i) => (&cfg.watch[i], i),
        None => {
            fallback = WatchConfig::new(&path);
            (&fallback, 0)
        }
    };
    let matcher = RoleMatcher::new(watch).map_err(|e| config_problem(i, e))?;
    let opts = GroupOptions { watch, staging_dir: None, matcher: Some(&matcher) };
    let groups = if watch.mode == WatchMode::Flat {
        group::build_flat_groups(&path, &opts)
    } else if group::holds_videos(&matcher, &path)? {
        group::build_folder_group(&path, &opts).map(|g| vec![g])
    } else {
        let dirs = group::export_folders(&matcher, &path, watch.follow_symlinks)?;
        group::plan_folders(&dirs, &opts)
    };
    groups.with_context(|| format!("cannot plan {}", path.display()))
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn render_text(groups: &[UploadGroup], out: &mut dyn Write) -> std::io::Result<()> {
    if groups.is_empty() {
        writeln!(out, "no exports found")?;
        return Ok(());
    }
    for g in groups {
        let verdict = if g.is_ready() {
            "ready to upload".to_string()
        } else if g.is_valid() {
            "WAITING: a container is still being written".to_string()
        } else {
            let n = g.violations.len();
            format!("REJECTED, {n} problem{}", if n == 1 { "" } else { "s" })
        };
        writeln!(out, "{}: {verdict}", g.name)?;
        writeln!(out, "  export       {}", g.key.display())?;
        let perspective = g.perspective.map_or("not set".to_string(), |p| p.to_string());
        writeln!(out, "  layout       {}, perspective {perspective}", g.layout)?;
        if let Some(f) = &g.folder_name {
            writeln!(out, "  folder name  {f}")?;
        }
        if let Some(d) = &g.description {
            writeln!(out, "  description  {d}")?;
        }
        let n = g.files.len();
        writeln!(out, "  files        {n}, {}", human_bytes(g.total_bytes()))?;
        for f in &g.files {
            let shown = if f.rel_path.ends_with(&f.file_name) {
                f.rel_path.clone()
            } else {
                format!("{} (zipped as {})", f.rel_path, f.file_name)
            };
            writeln!(
                out,
                "    {:<12} {:<4} {:>10}  {shown}",
                f.role.as_str(),
                f.language.as_deref().unwrap_or("-"),
                human_bytes(f.size)
            )?;
            if let Some(m) = &f.media {
                writeln!(out, "    {:<12} {:<4} {:>10}  {}", "", "", "", crate::group::inspect::describe(m))?;
            }
        }
        for v in &g.violations {
            writeln!(out, "  - {}", v.tagged())?;
        }
        for v in &g.unfinished {
            writeln!(out, "  - still being written: {v} (the agent waits media_wait, then rejects it)")?;
        }
        for v in &g.warnings {
            writeln!(out, "  - warning: {}", v.tagged())?;
        }
        writeln!(out)?;
    }
    let rejected = groups.iter().filter(|g| !g.is_valid()).count();
    let waiting = groups.iter().filter(|g| g.is_valid() && !g.is_ready()).count();
    let total = groups.len();
    let waiting = if waiting > 0 { format!(", {waiting} still being written") } else { String::new() };
    writeln!(
        out,
        "{total} group{}: {} ready, {rejected} rejected{waiting} (dry run: nothing was sent)",
        if total == 1 { "" } else { "s" },
        groups.iter().filter(|g| g.is_ready()).count()
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanJson<'a> {
    groups: Vec<GroupJson<'a>>,
    ready: usize,
    rejected: usize,
    /// Valid groups with a container still being written.
    waiting: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupJson<'a> {
    name: &'a str,
    key: String,
    root: String,
    watch_path: Option<String>,
    layout: &'static str,
    perspective: Option<&'static str>,
    description: Option<&'a str>,
    folder_name: Option<&'a str>,
    priority: i32,
    fingerprint: &'a str,
    total_bytes: u64,
    valid: bool,
    /// Valid, and nothing still being written: would be queued now.
    ready: bool,
    media_check: &'static str,
    files: Vec<FileJson<'a>>,
    violations: &'a [Violation],
    unfinished: &'a [Violation],
    warnings: &'a [Violation],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileJson<'a> {
    path: &'a str,
    file_name: &'a str,
    role: &'static str,
    language: Option<&'a str>,
    size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<&'a MediaFacts>,
}

fn render_json(groups: &[UploadGroup], out: &mut dyn Write) -> anyhow::Result<()> {
    let shaped: Vec<GroupJson> = groups
        .iter()
        .map(|g| GroupJson {
            name: &g.name,
            key: g.key.display().to_string(),
            root: g.root.display().to_string(),
            watch_path: g.watch_path.as_ref().map(|p| p.display().to_string()),
            layout: g.layout.as_str(),
            perspective: g.perspective.map(|p| p.as_str()),
            description: g.description.as_deref(),
            folder_name: g.folder_name.as_deref(),
            priority: g.priority,
            fingerprint: &g.fingerprint,
            total_bytes: g.total_bytes(),
            valid: g.is_valid(),
            ready: g.is_ready(),
            media_check: g.media_check.as_str(),
            files: g
                .files
                .iter()
                .map(|f| FileJson {
                    path: &f.rel_path,
                    file_name: &f.file_name,
                    role: f.role.as_str(),
                    language: f.language.as_deref(),
                    size_bytes: f.size,
                    media: f.media.as_ref(),
                })
                .collect(),
            violations: &g.violations,
            unfinished: &g.unfinished,
            warnings: &g.warnings,
        })
        .collect();
    let rejected = groups.iter().filter(|g| !g.is_valid()).count();
    let ready = groups.iter().filter(|g| g.is_ready()).count();
    let doc = PlanJson { groups: shaped, ready, rejected, waiting: groups.len() - ready - rejected };
    // Rendered first, then written: a closed pipe then surfaces as the
    // io::Error the command line treats as a normal end, not as a JSON error.
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    out.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{ConfigArg, PlanArgs};
    use std::fs;

    struct Setup {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        config: PathBuf,
    }

    /// A config with a folders-mode and a flat-mode watch folder.
    fn setup() -> Setup {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_owned();
        for f in [
            "exports/Shot_010_v002/Shot_010_v002_L.mov",
            "exports/Shot_010_v002/Shot_010_v002_R.mov",
            "exports/Shot_010_v002/Shot_010_v002.en.srt",
            "exports/Tokyo Night/Tokyo Night.aivu",
            "drop/A_L.mov",
            "drop/A_R.mov",
            "drop/A.fr.srt",
        ] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            // Real (tiny) containers for videos and audio: the media check reads them.
            let bytes = crate::media::synth::for_name(f, 0).unwrap_or_else(|| b"0123456789".to_vec());
            fs::write(&p, bytes).expect("write");
        }
        let config = root.join("agent.toml");
        fs::write(
            &config,
            "[[watch]]\npath = \"exports\"\n\n[[watch]]\npath = \"drop\"\nmode = \"flat\"\nfolder_name = \"Drops\"\n",
        )
        .expect("write");
        Setup { _tmp: tmp, root, config }
    }

    fn plan(config: &Path, json: bool, path: Option<PathBuf>) -> (anyhow::Result<Outcome>, String) {
        let args = PlanArgs { config: ConfigArg { config: Some(config.to_owned()) }, json, path };
        let mut out = Vec::new();
        let r = run_to(args, &mut out);
        (r, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn text_plan_of_all_watch_folders() {
        let s = setup();
        let (r, text) = plan(&s.config, false, None);
        assert_eq!(r.expect("plan"), Outcome::Success, "{text}");
        assert!(text.contains("Shot_010_v002: ready to upload"), "{text}");
        assert!(text.contains("layout       Separate, perspective Regular"), "{text}");
        let eye = human_bytes(crate::media::synth::for_name("Shot_010_v002_L.mov", 0).unwrap().len() as u64);
        assert!(text.contains(&format!("video_left   -    {eye:>10}  Shot_010_v002_L.mov")), "{text}");
        // What each container says, under its file.
        assert!(text.contains("MP4 hvc1 1920×1080 30 fps 0.267 s\n"), "{text}");
        assert!(text.contains("2 views (MV-HEVC), hero left, baseline 64.0 mm, hfov 63.4°"), "{text}");
        assert!(text.contains("subtitle     en         10 B  Shot_010_v002.en.srt"), "{text}");
        assert!(text.contains("Tokyo Night: ready to upload") && text.contains("AIV, perspective 180"), "{text}");
        assert!(text.contains("A: ready to upload") && text.contains("folder name  Drops"), "{text}");
        assert!(text.contains("3 groups: 3 ready, 0 rejected"), "{text}");
    }

    #[test]
    fn rejected_group_fails_with_its_violations() {
        let s = setup();
        fs::remove_file(s.root.join("exports/Shot_010_v002/Shot_010_v002_R.mov")).expect("rm");
        fs::write(s.root.join("exports/Shot_010_v002/notes.txt"), "x").expect("write");
        let (r, text) = plan(&s.config, false, None);
        assert_eq!(r.expect("plan"), Outcome::WorkFailed, "{text}");
        assert!(text.contains("Shot_010_v002: REJECTED, 2 problems"), "{text}");
        assert!(text.contains("notes.txt: no role pattern matches") && text.contains("[unmatched-file]"), "{text}");
        assert!(text.contains("right-eye") && text.contains("[separate-needs-left-and-right]"), "{text}");
        assert!(text.contains("2 ready, 1 rejected"), "{text}");
    }

    #[test]
    fn json_shape_is_stable() {
        let s = setup();
        fs::write(s.root.join("exports/Shot_010_v002/Shot_010_v002.xx.srt"), "x").expect("write");
        let (r, text) = plan(&s.config, true, None);
        assert_eq!(r.expect("plan"), Outcome::WorkFailed);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!((doc["ready"].as_u64(), doc["rejected"].as_u64()), (Some(2), Some(1)));
        let g = &doc["groups"][0];
        let mut keys: Vec<&str> = g.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "description",
                "files",
                "fingerprint",
                "folderName",
                "key",
                "layout",
                "mediaCheck",
                "name",
                "perspective",
                "priority",
                "ready",
                "root",
                "totalBytes",
                "unfinished",
                "valid",
                "violations",
                "warnings",
                "watchPath"
            ]
        );
        assert_eq!(g["name"], "Shot_010_v002");
        assert_eq!(g["layout"], "Separate");
        assert_eq!(g["perspective"], "Regular");
        assert_eq!(g["valid"], false);
        assert_eq!(g["fingerprint"].as_str().map(str::len), Some(64));
        let eye = crate::media::synth::for_name("Shot_010_v002_L.mov", 0).unwrap().len();
        assert_eq!(
            g["files"][0],
            serde_json::json!({"path": "Shot_010_v002_L.mov", "fileName": "Shot_010_v002_L.mov", "role": "video_left",
                "language": null, "sizeBytes": eye,
                "media": {"container": "mp4", "durationMs": 267, "width": 1920, "height": 1080, "frameRate": 30.0,
                    "codec": "hvc1", "views": 1, "heroEye": null, "baselineMm": null, "hfovDeg": null,
                    "projection": null, "packing": null, "audioChannels": null, "sampleRate": null}})
        );
        assert_eq!(g["files"][2].get("media"), None, "a subtitle is not looked into: no media object");
        assert_eq!((g["mediaCheck"].as_str(), g["ready"].as_bool()), (Some("reject"), Some(false)));
        assert_eq!(g["unfinished"], serde_json::json!([]));
        assert_eq!(g["violations"][0]["rule"], "language-unsupported");
        assert_eq!(g["violations"][0]["file"], "Shot_010_v002.xx.srt");
        assert!(g["violations"][0]["message"].as_str().expect("message").contains("\"xx\""));
        assert!(Path::new(g["key"].as_str().expect("key")).ends_with("exports/Shot_010_v002"));
        let flat = &doc["groups"][2];
        assert_eq!(flat["name"], "A");
        assert_eq!(flat["folderName"], "Drops");
        assert!(Path::new(flat["key"].as_str().expect("key")).ends_with("drop/A"));
    }

    #[test]
    fn path_is_one_export_or_a_folder_of_exports() {
        let s = setup();
        let (r, text) = plan(&s.config, true, Some(s.root.join("exports/Tokyo Night")));
        assert_eq!(r.expect("plan"), Outcome::Success);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["groups"].as_array().map(Vec::len), Some(1));
        assert_eq!(doc["groups"][0]["name"], "Tokyo Night");
        assert!(doc["groups"][0]["watchPath"].as_str().expect("watch path").ends_with("exports"));

        let (r, text) = plan(&s.config, true, Some(s.root.join("exports")));
        assert_eq!(r.expect("plan"), Outcome::Success);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["groups"].as_array().map(Vec::len), Some(2));

        // The flat watch folder's settings apply to a PATH inside it.
        let (r, text) = plan(&s.config, true, Some(s.root.join("drop")));
        assert_eq!(r.expect("plan"), Outcome::Success);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["groups"][0]["name"], "A");

        // A folder outside every watch folder gets the defaults (folders mode).
        let elsewhere = tempfile::tempdir().expect("tempdir");
        for eye in ["clip_L.mov", "clip_R.mov"] {
            fs::write(elsewhere.path().join(eye), crate::media::synth::for_name(eye, 0).unwrap()).expect("write");
        }
        let (r, text) = plan(&s.config, true, Some(elsewhere.path().to_owned()));
        assert_eq!(r.expect("plan"), Outcome::Success, "{text}");
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["groups"][0]["layout"], "Separate");
        assert_eq!(doc["groups"][0]["watchPath"], serde_json::Value::Null);
    }

    #[test]
    fn config_and_usage_errors_map_to_exit_2() {
        let s = setup();
        let is_usage = |e: &anyhow::Error| e.chain().any(|c| c.is::<ConfigError>() || c.is::<UsageError>());
        // A missing watch folder is a config problem.
        fs::write(&s.config, "[[watch]]\npath = \"nowhere\"\n").expect("write");
        let (r, _) = plan(&s.config, false, None);
        let e = r.expect_err("missing watch folder");
        assert!(is_usage(&e) && format!("{e:#}").contains("watch[0].path"), "{e:#}");
        // So is a broken config file.
        fs::write(&s.config, "[[watch]]\npath = \"exports\"\nlayuot = \"SBS\"\n").expect("write");
        let (r, _) = plan(&s.config, false, None);
        assert!(is_usage(&r.expect_err("typo")));
        // No watch folders and no PATH: usage.
        fs::write(&s.config, "").expect("write");
        let (r, _) = plan(&s.config, false, None);
        assert!(is_usage(&r.expect_err("nothing to plan")));
        // PATH that is not a folder: usage.
        let (r, _) = plan(&s.config, false, Some(s.root.join("nope")));
        assert!(is_usage(&r.expect_err("not a folder")));
    }

    #[test]
    fn plan_writes_nothing() {
        let s = setup();
        let bundle = s.root.join("exports/Film/Film.fcpxmld");
        fs::create_dir_all(&bundle).expect("mkdir");
        fs::write(bundle.join("Info.fcpxml"), "<fcpxml/>").expect("write");
        fs::write(s.root.join("exports/Film/Film.mov"), crate::media::synth::for_name("Film.mov", 0).unwrap())
            .expect("write");
        fs::write(s.root.join("exports/Film/Film.aime"), "x").expect("write");
        let before = walk(&s.root);
        let (r, text) = plan(&s.config, false, None);
        assert_eq!(r.expect("plan"), Outcome::Success, "{text}");
        assert!(text.contains("Film.fcpxmld (zipped as Film.fcpxmld.zip)"), "{text}");
        assert_eq!(walk(&s.root), before);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).expect("ls") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
        out.sort();
        out
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1_287_340_032), "1.2 GiB");
    }
}

//! The operator's surface: `check` on good and broken configs, the shipped
//! example config, and the packaging files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spatialgen-sync"));
    cmd.env_remove("RUST_LOG").env_remove("SPATIALGEN_API_KEY").env_remove("SPATIALGEN_SYNC_CONFIG");
    cmd
}

fn check(config: &Path, key: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.arg("check").arg("--config").arg(config);
    if let Some(k) = key {
        cmd.env("SPATIALGEN_API_KEY", k);
    }
    cmd.output().expect("spawn spatialgen-sync")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A temp dir with a `drop` folder and a config file whose body is `body`
/// with `{dir}` replaced by the temp dir.
fn config_with(body: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("drop")).unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, body.replace("{dir}", &dir.path().display().to_string())).unwrap();
    (dir, file)
}

const GOOD: &str =
    "[journal]\npath = \"{dir}/state/journal.sqlite3\"\n[[watch]]\npath = \"{dir}/drop\"\nsettle = \"5s\"\n";

#[test]
fn check_accepts_a_good_config_and_never_prints_the_key() {
    let (_dir, file) = config_with(GOOD);
    let out = check(&file, Some("sk-live-0123456789"));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("OK"), "{all}");
    assert!(all.contains("settle = \"5s\""), "{all}");
    assert!(all.contains("(redacted)"), "{all}");
    assert!(!all.contains("sk-live-0123456789"), "the key leaked: {all}");
}

// `prlimit` (util-linux) runs the binary under a given limit.
#[cfg(target_os = "linux")]
#[test]
fn check_warns_when_the_open_file_limit_is_low_for_the_config() {
    let (_dir, file) = config_with(&format!("{GOOD}[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 900\n"));
    let run = |limit: &str| {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={limit}")).arg(env!("CARGO_BIN_EXE_spatialgen-sync"));
        cmd.args(["check", "--config"]).arg(&file).env("SPATIALGEN_API_KEY", "k").env_remove("RUST_LOG");
        cmd.output().expect("prlimit runs the binary")
    };
    let low = run("256:256");
    let all = text(&low);
    assert_eq!(low.status.code(), Some(0), "a warning, not an error: {all}");
    assert!(all.contains("warning: the open-file limit is 256") && all.contains("max_connections 900"), "{all}");
    assert!(all.contains("LimitNOFILE"), "says how to raise it: {all}");
    // A hard limit can be lowered but not raised here: use this process's own.
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    let hard = r.rlim_max;
    assert!(hard >= 2048, "this test needs a hard limit of 2048 or more, not {hard}");
    let liftable = text(&run(&format!("256:{hard}")));
    assert!(liftable.contains(&format!("raises its soft limit to the hard limit ({hard})")), "{liftable}");
    let enough = text(&run(&format!("{hard}:{hard}")));
    assert!(!enough.contains("open-file limit"), "{enough}");
}

#[test]
fn check_rejects_each_kind_of_mistake_with_exit_2_and_a_precise_message() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("unknown key", "[upload]\nmax_group = 2\n", Some("config.toml:2: unknown field `max_group`")),
        ("nearest key", "[[watch]]\npath = \"{dir}/drop\"\nsetle = \"3s\"\n", Some("did you mean `settle`?")),
        ("bad duration", "[[watch]]\npath = \"{dir}/drop\"\nsettle = \"soon\"\n", Some("config.toml:3")),
        (
            "bad glob",
            "[[watch]]\npath = \"{dir}/drop\"\n[watch.roles]\nvideo = [\"[oops\"]\n",
            Some("watch[0].roles.video: bad glob"),
        ),
        ("missing folder", "[[watch]]\npath = \"{dir}/nope\"\n", Some("nope is not an existing folder")),
        (
            "move_to missing",
            "[[watch]]\npath = \"{dir}/drop\"\nafter_upload = \"move\"\n",
            Some("watch[0].move_to: is required"),
        ),
        (
            "move_to absent dir",
            "[[watch]]\npath = \"{dir}/drop\"\nafter_upload = \"move\"\nmove_to = \"{dir}/gone\"\n",
            Some("watch[0].move_to"),
        ),
        ("plain http", "[api]\nendpoint = \"http://upload.example.com\"\n", Some("api.endpoint")),
        (
            "unwritable journal",
            "[journal]\npath = \"/proc/spatialgen/journal.sqlite3\"\n",
            Some("journal.path: cannot write in /proc/spatialgen"),
        ),
        (
            "bad language",
            "[[watch]]\npath = \"{dir}/drop\"\nsubtitle_language = \"klingon\"\n",
            Some("subtitle_language"),
        ),
        ("not toml", "[api\n", Some("config.toml:1")),
    ];
    for (what, body, needle) in cases {
        let (_dir, file) = config_with(body);
        let out = check(&file, Some("k"));
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {all}");
        if let Some(n) = needle {
            assert!(all.contains(n), "{what}: expected {n:?} in:\n{all}");
        }
    }
}

#[test]
fn check_reports_an_unset_or_empty_key_variable() {
    let (_dir, file) = config_with(GOOD);
    let out = check(&file, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("SPATIALGEN_API_KEY is not set"), "{}", text(&out));
    let out = check(&file, Some("  "));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("SPATIALGEN_API_KEY is empty"), "{}", text(&out));
}

#[test]
fn check_collects_every_problem_at_once() {
    let (_dir, file) =
        config_with("[upload]\nmax_groups = 0\nmax_parts_in_flight = 0\n[[watch]]\npath = \"{dir}/nope\"\n");
    let out = check(&file, Some("k"));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("config.toml:2: upload.max_groups"), "{all}");
    assert!(all.contains("config.toml:3: upload.max_parts_in_flight"), "{all}");
}

#[test]
fn shipped_example_config_passes_check() {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir(dir.path().join("exports")).unwrap();
    // Same file, with its absolute paths moved into the temp dir.
    let body = example
        .replace("/var/lib/spatialgen-sync/journal.sqlite3", &format!("{d}/journal.sqlite3"))
        .replace("/renders/exports", &format!("{d}/exports"));
    assert_ne!(body, example);
    let file = dir.path().join("config.toml");
    std::fs::write(&file, body).unwrap();
    let out = check(&file, Some("k"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        // CI sets this (and installs systemd), so there the check always runs.
        assert!(std::env::var_os("SPATIALGEN_REQUIRE_SYSTEMD").is_none(), "systemd-analyze is required here");
        eprintln!("systemd-analyze is not installed on this machine; the unit is verified in CI");
        return;
    };
    assert!(probe.status.success());
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd/spatialgen-sync.service"))
            .unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("ProtectSystem=strict") && unit.contains("NoNewPrivileges=true")
    );
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spatialgen-sync.service");
    std::fs::write(&path, unit.replace("/usr/bin/spatialgen-sync", env!("CARGO_BIN_EXE_spatialgen-sync"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("spatialgen-sync.service:"), "warnings about the unit: {all}");
}

#[test]
fn launchd_plist_and_windows_service_definition_are_well_formed() {
    let plist =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/launchd/com.spatialgen.sync.plist"))
            .unwrap();
    for needle in ["<key>KeepAlive</key>", "<string>run</string>", "<key>StandardErrorPath</key>"] {
        assert!(plist.contains(needle), "{needle}");
    }
    assert_eq!(plist.matches("<dict>").count(), plist.matches("</dict>").count());
    let winsw =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/windows/spatialgen-sync.xml")).unwrap();
    assert!(winsw.contains("<executable>") && winsw.contains("run --config"));
}

#[test]
fn demo_runs_the_whole_flow_and_exits_0() {
    let out = bin().arg("demo").output().expect("spawn spatialgen-sync demo");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for (name, layout) in [("Shot_010_v002", "(Separate)"), ("Teaser", "(2D)"), ("Spatial_Walk", "(MVHEVC)")] {
        let done = all.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 6 && w[0] == name && w[1] == "completed" && w[4].parse::<u64>().is_ok() && w[5] == layout
        });
        assert!(done, "{name} has no completed summary line with a library id and {layout}: {all}");
    }
    // The crashed render is rejected by the media check, naming the rule.
    assert!(
        all.lines()
            .any(|l| l.trim_start().starts_with("Crashed_Render   rejected") && l.ends_with("[media-truncated]")),
        "{all}"
    );
    assert!(all.contains("8 files verified byte for byte"), "{all}");
    assert!(all.contains("2 views (MV-HEVC)"), "the summary says what the containers said: {all}");
    assert!(all.contains("[[watch]]"), "the demo prints the config it used: {all}");
}

use super::*;

const BASE: &str = r#"
[api]
endpoint = "https://spatialgen.com"

[journal]
path = "/var/lib/sg/journal.sqlite3"

[upload]
max_parts_in_flight = 4
bandwidth = "100MiB/s"

[[upload.window]]
days = ["mon", "tue", "wed", "thu", "fri"]
from = "19:00"
to = "07:00"

[hooks]
on_complete = ["/usr/local/bin/notify", "done"]

[[watch]]
path = "/renders/a"
settle = "30s"

[[watch]]
path = "/renders/b"
"#;

fn cfg(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/spatialgen-sync/config.toml")).expect("valid config")
}

fn edit(from: &str, to: &str) -> Config {
    assert!(BASE.contains(from), "{from:?} not in the base config");
    cfg(&BASE.replacen(from, to, 1))
}

#[test]
fn the_same_config_is_no_change() {
    let plan = diff_reload(&cfg(BASE), &cfg(BASE));
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.to_string(), "no changes");
}

#[test]
fn watch_folders_added_removed_and_changed_by_key() {
    let new = edit("[[watch]]\npath = \"/renders/b\"\n", "[[watch]]\npath = \"/renders/c\"\n");
    let plan = diff_reload(&cfg(BASE), &new);
    assert_eq!(plan.watch_added, [PathBuf::from("/renders/c")]);
    assert_eq!(plan.watch_removed, [PathBuf::from("/renders/b")]);
    assert!(plan.watch_changed.is_empty());

    let new = edit(
        "path = \"/renders/a\"\nsettle = \"30s\"\n",
        "path = \"/renders/a\"\nsettle = \"2m\"\npriority = 5\n[watch.roles]\nvideo = [\"*.mov\"]\n",
    );
    let plan = diff_reload(&cfg(BASE), &new);
    assert_eq!(
        plan.watch_changed,
        [WatchChange {
            path: "/renders/a".into(),
            keys: vec!["priority".into(), "roles.video".into(), "settle".into()]
        }]
    );
    assert!(plan.watch_added.is_empty() && plan.watch_removed.is_empty());
    assert_eq!(plan.to_string(), "watch /renders/a changed (priority, roles.video, settle)");
}

#[test]
fn order_of_watch_entries_does_not_matter() {
    let swapped = BASE
        .replace("path = \"/renders/a\"\nsettle = \"30s\"", "path = \"/renders/TMP\"\nsettle = \"30s\"")
        .replace("path = \"/renders/b\"", "path = \"/renders/a\"\nsettle = \"30s\"")
        .replace("path = \"/renders/TMP\"\nsettle = \"30s\"", "path = \"/renders/b\"");
    assert!(diff_reload(&cfg(BASE), &cfg(&swapped)).is_empty());
}

#[test]
fn limits_bandwidth_and_windows_are_told_apart() {
    let plan = diff_reload(&cfg(BASE), &edit("bandwidth = \"100MiB/s\"", "bandwidth = \"50MiB/s\""));
    assert!(plan.bandwidth_changed && !plan.windows_changed && plan.schedule_changed());
    assert!(plan.upload_changed.is_empty());

    let plan = diff_reload(&cfg(BASE), &edit("to = \"07:00\"", "to = \"06:00\""));
    assert!(plan.windows_changed && !plan.bandwidth_changed && plan.schedule_changed());

    let plan = diff_reload(&cfg(BASE), &edit("max_parts_in_flight = 4", "max_parts_in_flight = 8\nmax_groups = 3"));
    assert_eq!(plan.upload_changed, ["max_groups", "max_parts_in_flight"]);
    assert!(!plan.schedule_changed());
    assert_eq!(plan.to_string(), "upload: max_groups, max_parts_in_flight");

    // Removing the limit is a change too.
    let plan = diff_reload(&cfg(BASE), &edit("bandwidth = \"100MiB/s\"\n", ""));
    assert!(plan.bandwidth_changed);
}

#[test]
fn hooks_metrics_and_log_level_apply_live() {
    let plan =
        diff_reload(&cfg(BASE), &edit("on_complete = [\"/usr/local/bin/notify\", \"done\"]", "timeout = \"5s\""));
    assert!(plan.hooks_changed, "{plan:?}");
    let plan = diff_reload(
        &cfg(BASE),
        &cfg(&format!("{BASE}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n[log]\nlevel = \"debug\"\n")),
    );
    assert!(plan.metrics_changed && plan.log_level_changed && plan.restart_required.is_empty(), "{plan:?}");
    assert_eq!(plan.to_string(), "http listener; log level");
}

#[test]
fn api_journal_and_log_output_need_a_restart() {
    let new = edit(
        "endpoint = \"https://spatialgen.com\"",
        "endpoint = \"https://staging.spatialgen.com\"\nrequest_timeout = \"2m\"",
    );
    let new_text = format!("{}\n[log]\nformat = \"json\"\n", BASE.replace("journal.sqlite3", "j2.sqlite3"));
    let plan = diff_reload(&cfg(BASE), &new);
    assert_eq!(plan.restart_required, ["api.endpoint", "api.request_timeout"]);
    let plan = diff_reload(&cfg(BASE), &cfg(&new_text));
    assert_eq!(plan.restart_required, ["log.format", "journal.path"]);
    assert!(plan.to_string().contains("needs a restart to apply: log.format, journal.path"), "{plan}");
}

#[test]
fn reload_from_file_accepts_a_good_config_and_refuses_a_bad_one_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.toml");
    let current = cfg(BASE);

    std::fs::write(&file, BASE.replace("bandwidth = \"100MiB/s\"", "bandwidth = \"20MiB/s\"")).expect("write");
    let (new, plan) = load_reload(&file, &current).expect("good config");
    assert_eq!(new.upload.bandwidth, Some(crate::config::Rate(20 * 1024 * 1024)));
    assert!(plan.bandwidth_changed);

    std::fs::write(&file, BASE.replace("max_parts_in_flight = 4", "max_parts_in_fligth = 4")).expect("write");
    let err = load_reload(&file, &current).expect_err("unknown key");
    let msg = err.to_string();
    assert!(msg.contains(&format!("{}:9", file.display())) && msg.contains("max_parts_in_fligth"), "{msg}");

    std::fs::write(&file, BASE.replace("to = \"07:00\"", "to = \"7pm\"")).expect("write");
    let msg = load_reload(&file, &current).expect_err("bad window").to_string();
    assert!(msg.contains("upload.window[0].to"), "{msg}");
}

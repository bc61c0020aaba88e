//! `[journal]` for a fleet and `[[watch]] name`: every rule, with its line.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/sgs/config.toml"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

const FLEET: &str = r#"
[journal]
url = "postgresql://sync:hunter2@db.studio.lan/spatialgen?sslmode=verify-full"
node = "render-07"
lease = "45s"

[[watch]]
path = "/mnt/exports"
name = "exports"
"#;

#[test]
fn a_fleet_config_reads_with_its_defaults() {
    let cfg = parse(FLEET).unwrap();
    assert_eq!(
        cfg.journal.url.as_ref().map(|u| u.expose()),
        Some("postgresql://sync:hunter2@db.studio.lan/spatialgen?sslmode=verify-full")
    );
    assert_eq!(cfg.journal.node_name(), "render-07");
    assert_eq!(cfg.journal.lease, Dur::secs(45));
    assert_eq!(cfg.watch[0].name.as_deref(), Some("exports"));
    let plain = parse("[journal]\nurl = \"postgresql://db/sg\"\n").unwrap();
    assert_eq!(plain.journal.lease, Dur::secs(30));
    assert_eq!(plain.journal.node_name(), host_name(), "the host name by default");
    assert!(!host_name().is_empty());
}

#[test]
fn the_database_password_never_shows() {
    let cfg = parse(FLEET).unwrap();
    let shown = cfg.to_toml();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgresql://sync:***@db.studio.lan/spatialgen"), "{shown}");
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

#[test]
fn path_and_url_are_exclusive_and_every_fleet_mistake_has_its_line() {
    let p = problems(
        r#"[journal]
path = "/var/lib/j.sqlite3"
url = "postgresql://db.lan/sg?sslmode=required"
node = "render 07"
lease = "1s"

[[watch]]
path = "/mnt/a"

[[watch]]
path = "/mnt/b"
name = "x"

[[watch]]
path = "/mnt/c"
name = "x"

[[watch]]
path = "/mnt/d"
name = "no/slash"
"#,
    );
    let want = [
        "/etc/sgs/config.toml:3: journal.url: path and url are exclusive",
        "/etc/sgs/config.toml:3: journal.url: sslmode \"required\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
        "/etc/sgs/config.toml:4: journal.node: \"render 07\" may hold only letters, digits",
        "/etc/sgs/config.toml:5: journal.lease: 1s is too short",
        "/etc/sgs/config.toml:8: watch[0].path: needs a name",
        "/etc/sgs/config.toml:16: watch[2].name: \"x\" names another watch folder too",
        "/etc/sgs/config.toml:20: watch[3].name: \"no/slash\" may hold only",
    ];
    for w in want {
        assert!(p.iter().any(|l| l.starts_with(w)), "missing {w:?} in {p:#?}");
    }
    assert_eq!(p.len(), want.len(), "{p:#?}");
}

#[test]
fn fleet_keys_without_a_url_are_refused_and_a_bad_url_is_named() {
    let p = problems("[journal]\nnode = \"a\"\npassword_file = \"/etc/pw\"\n");
    assert!(p[0].starts_with("/etc/sgs/config.toml:2: journal.node: needs url"), "{p:?}");
    assert!(p[1].starts_with("/etc/sgs/config.toml:3: journal.password_file: needs url"), "{p:?}");
    for (url, says) in [
        ("mysql://db/x", "scheme \"mysql\" is not postgresql://"),
        ("postgresql://db", "must name one database"),
        ("not a url", "is not a URL"),
    ] {
        let p = problems(&format!("[journal]\nurl = \"{url}\"\n"));
        assert!(p.len() == 1 && p[0].contains(says), "{url}: {p:?}");
    }
}

#[test]
fn a_password_file_must_be_private_and_not_empty() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("pg-password");
    std::fs::write(&file, "s3cret\n").unwrap();
    crate::owner_only::open_to_everyone(&file).unwrap();
    let url = DatabaseUrl::new("postgresql://sync@db/sg");
    // PGPASSWORD, when set in this test process, would come first.
    if std::env::var_os("PGPASSWORD").is_none() {
        let e = database_password(&url, Some(&file)).unwrap_err().to_string();
        assert!(e.contains("journal.password_file") && e.contains(&crate::owner_only::fix_hint(&file)), "{e}");
        #[cfg(unix)]
        {
            // Windows under Wine: a DACL set is not kept (Wine 8 maps it onto Unix mode
            // bits and leaves Everyone's read), so owner-only is observed on Unix only.
            crate::owner_only::restrict(&file).unwrap();
            assert_eq!(database_password(&url, Some(&file)).unwrap().as_deref(), Some("s3cret"));
            std::fs::write(&file, "\n").unwrap();
            assert!(database_password(&url, Some(&file)).unwrap_err().to_string().contains("is empty"));
        }
    }
    // A password in the URL wins: the file is not read.
    let in_url = DatabaseUrl::new("postgresql://sync:pw@db/sg");
    assert_eq!(database_password(&in_url, Some(Path::new("/nonexistent"))).unwrap(), None);
}

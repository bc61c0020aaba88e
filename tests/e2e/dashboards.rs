//! The Grafana dashboard and the Prometheus alert rules in `packaging/`
//! name only metrics the agent really exports, and the rules cover what
//! operators are paged for.

use std::collections::BTreeSet;

use spatialgen_sync::ops::metrics::{Metrics, StateSnapshot};

/// Every `spatialgen_…` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("spatialgen_") {
        let start = i + at;
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if before_ok {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The metric families the agent's `/metrics` serves (each has its `# TYPE` line even with no sample).
fn exported() -> BTreeSet<String> {
    let text = Metrics::new().render(&Ok(StateSnapshot::default()));
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn dashboard_and_alert_rules_use_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("spatialgen_groups") && exported.len() > 10, "{exported:?}");
    let dashboard = read("packaging/grafana/spatialgen-sync.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(json["panels"].as_array().is_some_and(|p| p.len() >= 6));
    for (file, text) in
        [("dashboard", dashboard.as_str()), ("alerts", read("packaging/prometheus/alerts.yml").as_str())]
    {
        let used = metric_names(text);
        assert!(used.len() >= 4, "{file}: {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} names metrics the agent does not export: {unknown:?}");
    }
    assert_eq!(
        metric_names("x spatialgen_nope_total{a} foo_spatialgen_x"),
        ["spatialgen_nope_total".to_string()].into()
    );
}

#[test]
fn alert_rules_cover_no_success_key_refused_failed_groups_and_missing_folders() {
    let rules = read("packaging/prometheus/alerts.yml");
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    for want in [
        "SpatialGenSyncNoSuccess",
        "SpatialGenSyncKeyRefused",
        "SpatialGenSyncFailedGroups",
        "SpatialGenSyncWatchFolderMissing",
    ] {
        assert!(alerts.contains(&want), "{want} missing from {alerts:?}");
    }
    // Each rule has an expression and a severity (YAML read as text: no tabs, two-space indents).
    assert!(!rules.contains('\t'));
    assert_eq!(rules.matches("expr:").count(), alerts.len());
    assert_eq!(rules.matches("severity:").count(), alerts.len());
}

#[test]
fn the_docker_healthcheck_asks_healthz_where_the_image_config_serves_it() {
    let text = read("packaging/docker/config.toml");
    let cfg = spatialgen_sync::config::Config::parse(&text, std::path::Path::new("/config/config.toml"))
        .expect("the image's config is valid");
    let addr = cfg.metrics.listen.expect("the image's config serves /healthz");
    let dockerfile = read("Dockerfile");
    let check = dockerfile.lines().skip_while(|l| !l.starts_with("HEALTHCHECK")).take(2).collect::<String>();
    assert!(check.contains(&format!("/dev/tcp/{}/{}", addr.ip(), addr.port())), "{check}");
    assert!(check.contains("GET /healthz") && check.contains(" 200 "), "{check}");
}

#[test]
fn the_windows_installer_writes_the_key_only_after_its_acl_and_names_what_it_copies() {
    let ps = read("packaging/windows/install.ps1");
    let acl = ps.find("Set-Acl -Path $keyFile").expect("the key file's ACL is set");
    let write = ps.find("Set-Content -NoNewline -Path $keyFile").expect("the key is written");
    assert!(acl < write, "the key is written before its ACL is set");
    let header: String = ps.lines().take_while(|l| l.starts_with('#')).collect::<Vec<_>>().join("\n");
    for copied in ["spatialgen-sync.exe", "spatialgen-sync-service.exe", "spatialgen-sync.xml", "config.example.toml"] {
        assert!(ps.contains(copied) && header.contains(copied), "{copied} is copied but not named in the header");
        let exists = ["packaging/windows/", ""]
            .iter()
            .any(|d| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{d}{copied}")).exists());
        assert!(exists || copied.ends_with(".exe"), "{copied} is in the repository");
    }
}

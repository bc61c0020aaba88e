use super::env::check_endpoint;
use super::*;
use crate::model::{Layout, Perspective};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/sgs/config.toml"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn parse_error(text: &str) -> (String, String) {
    match parse(text) {
        Err(ConfigError::Parse { location, message }) => (location, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn empty_file_takes_every_default() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg.api.endpoint, "https://spatialgen.com");
    assert_eq!(cfg.api.api_key_env, "SPATIALGEN_API_KEY");
    assert_eq!(cfg.journal.path, PathBuf::from("/etc/sgs/journal.sqlite3"));
    assert_eq!(cfg.journal.staging_dir(), PathBuf::from("/etc/sgs/staging"));
    assert_eq!(cfg.upload.max_groups, 2);
    assert_eq!(cfg.upload.max_parts_in_flight, 4);
    assert_eq!(cfg.upload.retry_base, Dur::secs(1));
    assert_eq!(cfg.upload.retry_cap, Dur::secs(300));
    assert_eq!(cfg.upload.retry_failed_after, Dur::secs(3600));
    assert_eq!(cfg.upload.shutdown_grace, Dur::secs(10));
    assert!(cfg.upload.verify_etag);
    assert_eq!(cfg.log.keep, 14);
    assert!(cfg.watch.is_empty());
}

#[test]
fn interface_example_parses_with_its_values() {
    let cfg = parse(
        r#"
[api]
endpoint = "https://spatialgen.com"
api_key_env = "SPATIALGEN_API_KEY"

[journal]
path = "/var/lib/spatialgen-sync/journal.sqlite3"

[[watch]]
path = "/renders/exports"
mode = "folders"
layout = "auto"
default_layout = "MVHEVC"
perspective = "Regular"
settle = "30s"
after_upload = "move"
move_to = "/renders/uploaded"
"#,
    )
    .unwrap();
    let w = &cfg.watch[0];
    assert_eq!(w.path, PathBuf::from("/renders/exports"));
    assert_eq!(w.mode, WatchMode::Folders);
    assert_eq!(w.layout, LayoutChoice::Auto);
    assert_eq!(w.default_layout, Layout::Mvhevc);
    assert_eq!(w.perspective, Some(Perspective::Regular));
    assert_eq!(w.settle, Dur::secs(30));
    assert_eq!(w.after_upload, AfterUpload::Move);
    assert_eq!(w.rescan, Dur::secs(600));
    assert_eq!(cfg.journal.path, PathBuf::from("/var/lib/spatialgen-sync/journal.sqlite3"));
}

#[test]
fn the_media_check_defaults_to_reject_after_ten_minutes_and_reads_every_value() {
    let cfg = parse("[[watch]]\npath = \"/a\"\n[[watch]]\npath = \"/b\"\nmedia_check = \"warn\"\nmedia_wait = \"90s\"\n[[watch]]\npath = \"/c\"\nmedia_check = \"off\"\n").unwrap();
    let got: Vec<(MediaCheck, Dur)> = cfg.watch.iter().map(|w| (w.media_check, w.media_wait)).collect();
    assert_eq!(
        got,
        vec![
            (MediaCheck::Reject, Dur::secs(600)),
            (MediaCheck::Warn, Dur::secs(90)),
            (MediaCheck::Off, Dur::secs(600))
        ]
    );
    assert_eq!(cfg.watch[0].perspective, None, "not set: the video's projection may decide");
}

#[test]
fn a_media_wait_out_of_range_is_named_with_its_line() {
    for (wait, ok) in [("0s", false), ("500ms", false), ("1s", true), ("7d", true), ("8d", false)] {
        let text = format!("[[watch]]\npath = \"/a\"\nmedia_wait = \"{wait}\"\n");
        let found = match parse(&text) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(p)) => p,
            Err(e) => panic!("{wait}: {e}"),
        };
        let named: Vec<&String> = found.iter().filter(|p| p.contains("media_wait")).collect();
        assert_eq!(named.is_empty(), ok, "{wait}: {found:?}");
        if !ok {
            assert!(named[0].contains(":3") && named[0].contains("1s to 7d"), "{wait}: {named:?}");
        }
    }
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let cfg = parse("[journal]\npath = \"state/j.db\"\n[[watch]]\npath = \"drop\"\n").unwrap();
    assert_eq!(cfg.journal.path, PathBuf::from("/etc/sgs/state/j.db"));
    assert_eq!(cfg.watch[0].path, PathBuf::from("/etc/sgs/drop"));
}

#[test]
fn unknown_key_names_line_and_nearest_valid_key() {
    let (loc, msg) = parse_error("[upload]\nmax_group = 3\n");
    assert_eq!(loc, "/etc/sgs/config.toml:2");
    assert!(msg.contains("unknown field `max_group`"), "{msg}");
    assert!(msg.contains("did you mean `max_groups`?"), "{msg}");
}

#[test]
fn unknown_key_in_watch_table_is_an_error() {
    let (loc, msg) = parse_error("[[watch]]\npath = \"/x\"\nsetle = \"3s\"\n");
    assert_eq!(loc, "/etc/sgs/config.toml:3");
    assert!(msg.contains("did you mean `settle`?"), "{msg}");
}

#[test]
fn bad_values_name_the_line() {
    let cases = [
        ("[[watch]]\npath = \"/x\"\nsettle = \"soon\"\n", 3, "invalid duration"),
        ("[[watch]]\npath = \"/x\"\nlayout = \"stereo\"\n", 3, "expected auto | 2D"),
        ("[[watch]]\npath = \"/x\"\nperspective = \"90\"\n", 3, "unknown perspective"),
        ("[[watch]]\npath = \"/x\"\nmode = \"tree\"\n", 3, "unknown variant"),
        (
            "[[watch]]\npath = \"/x\"\nmedia_check = \"strict\"\n",
            3,
            "unknown variant `strict`, expected one of `reject`, `warn`, `off`",
        ),
        ("[[watch]]\npath = \"/x\"\nmedia_wait = \"ten minutes\"\n", 3, "invalid duration"),
        ("[upload]\nbandwidth = \"fast\"\n", 2, "invalid rate"),
        ("[upload]\nmax_groups = -1\n", 2, "invalid value"),
        ("[api\nendpoint = 1\n", 1, ""),
    ];
    for (text, line, needle) in cases {
        let (loc, msg) = parse_error(text);
        assert_eq!(loc, format!("/etc/sgs/config.toml:{line}"), "{text}");
        assert!(msg.contains(needle), "{text}: {msg}");
    }
}

#[test]
fn all_validation_problems_are_reported_at_once_with_lines() {
    let p = problems(
        r#"[api]
endpoint = "http://uploads.example.com"

[upload]
max_groups = 0
retry_base = "0s"

[[watch]]
path = "/a"
after_upload = "move"

[[watch]]
path = "/a/b"
audio_language = "xx"
roles = { video = ["[broken"] }
"#,
    );
    let joined = p.join("\n");
    assert!(joined.contains("config.toml:2: api.endpoint: \"http://uploads.example.com\" is plain http"), "{joined}");
    assert!(joined.contains("config.toml:5: upload.max_groups: must be at least 1"), "{joined}");
    assert!(joined.contains("config.toml:6: upload.retry_base"), "{joined}");
    assert!(joined.contains("watch[0].move_to: is required"), "{joined}");
    assert!(joined.contains("config.toml:13: watch[1].path: /a/b overlaps another watch folder"), "{joined}");
    assert!(
        joined.contains("config.toml:14: watch[1].audio_language: \"xx\" is not a supported language tag"),
        "{joined}"
    );
    assert!(joined.contains("watch[1].roles.video: bad glob \"[broken\""), "{joined}");
    assert_eq!(p.len(), 7, "{joined}");
}

#[test]
fn endpoint_rules() {
    for ok in
        ["https://spatialgen.com", "http://127.0.0.1:8787", "http://localhost:1", "http://[::1]:80/x", "HTTPS://a.b"]
    {
        assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
    }
    for bad in ["http://10.0.0.1:80", "ftp://x", "spatialgen.com", "https://", "http://localhost.evil.com"] {
        assert!(check_endpoint(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_agent_and_check_decide_loopback_alike() {
    // Spellings a hand-written parser gets wrong: userinfo, a trailing dot,
    // 127/8 beyond .1, the bracketed v6 loopback, an encoded host.
    for (url, allowed) in [
        ("http://127.0.0.2:9", true),
        ("http://[::1]/", true),
        ("http://user@127.0.0.1:9", true),
        ("http://127.0.0.1.evil.com", false),
        ("http://evil.com#@127.0.0.1", false),
        ("http://evil.com\\@127.0.0.1", false),
        ("http://0x7f.1/", true),
        ("http://[::ffff:10.0.0.1]/", false),
    ] {
        let vetted = vet_endpoint(url);
        assert_eq!(vetted.is_ok(), allowed, "{url}: {vetted:?}");
        let cfg = ApiConfig { endpoint: url.to_string(), ..Config::minimal(url, Path::new("/tmp/j")).api };
        let client = crate::api::Client::new(&cfg, ApiKey::new("k"));
        // The client adds one more refusal of its own (credentials in the URL).
        if !url.contains('@') {
            assert_eq!(client.is_ok(), allowed, "{url}: the client disagrees with check: {client:?}");
        }
    }
}

#[test]
fn check_prints_neither_the_webhook_secret_nor_hook_arguments() {
    let mut cfg = Config::minimal("https://spatialgen.com", Path::new("/tmp/j.sqlite3"));
    cfg.hooks.webhook = Some("https://hooks.studio.lan:8443/T0KEN-path?secret=abc".into());
    cfg.hooks.on_complete = Some(vec!["/usr/bin/notify".into(), "--password".into(), "hunter2".into()]);
    let text = cfg.to_toml();
    assert!(text.contains("https://hooks.studio.lan:8443/…"), "{text}");
    assert!(text.contains("/usr/bin/notify") && text.contains("<2 argument(s) not shown>"), "{text}");
    for secret in ["T0KEN", "secret=abc", "hunter2", "--password"] {
        assert!(!text.contains(secret), "{secret} printed: {text}");
    }
}

#[test]
fn move_to_rules() {
    let p = problems("[[watch]]\npath = \"/w\"\nafter_upload = \"move\"\nmove_to = \"/w/done\"\n");
    assert!(p[0].contains("inside the watch folder"), "{p:?}");
    let p = problems("[[watch]]\npath = \"/w\"\nmove_to = \"/done\"\n");
    assert!(p[0].contains("only used with after_upload = \"move\""), "{p:?}");
    assert!(parse("[[watch]]\npath = \"/w\"\nafter_upload = \"move\"\nmove_to = \"/done\"\n").is_ok());
}

#[test]
fn settle_zero_needs_a_marker() {
    assert!(problems("[[watch]]\npath = \"/w\"\nsettle = \"0s\"\n")[0].contains("ready_marker"));
    assert!(parse("[[watch]]\npath = \"/w\"\nsettle = \"0s\"\nready_marker = \"DONE\"\n").is_ok());
    assert!(problems("[[watch]]\npath = \"/w\"\nready_marker = \"a/DONE\"\n")[0].contains("plain file name"));
}

#[test]
fn subtitle_language_rejects_zxx_but_audio_accepts_it() {
    assert!(parse("[[watch]]\npath = \"/w\"\naudio_language = \"zxx\"\n").is_ok());
    let p = problems("[[watch]]\npath = \"/w\"\nsubtitle_language = \"zxx\"\n");
    assert!(p[0].contains("subtitle_language"), "{p:?}");
    assert!(parse("[[watch]]\npath = \"/w\"\nsubtitle_language = \"EN\"\n").is_ok());
}

#[test]
fn windows_and_hooks_are_checked() {
    let p = problems(
        "[upload]\n[[upload.window]]\ndays = [\"mon\", \"funday\"]\nfrom = \"25:00\"\nto = \"07:00\"\n[hooks]\non_complete = []\nwebhook = \"ftp://x\"\n",
    );
    let joined = p.join("\n");
    assert!(joined.contains("config.toml:3: upload.window[0].days: unknown day \"funday\""), "{joined}");
    assert!(joined.contains("config.toml:4: upload.window[0].from: invalid time \"25:00\""), "{joined}");
    assert!(joined.contains("hooks.on_complete: must be a non-empty list"), "{joined}");
    assert!(joined.contains("hooks.webhook"), "{joined}");
}

#[test]
fn durations_and_rates_parse() {
    assert_eq!("30s".parse::<Dur>(), Ok(Dur::secs(30)));
    assert_eq!("5m".parse::<Dur>(), Ok(Dur::secs(300)));
    assert_eq!("1h 30m".parse::<Dur>(), Ok(Dur::secs(5400)));
    assert!("30".parse::<Dur>().is_err());
    assert_eq!("200MiB/s".parse::<Rate>(), Ok(Rate(200 * 1024 * 1024)));
    assert_eq!("50MB/s".parse::<Rate>(), Ok(Rate(50_000_000)));
    assert_eq!("800Mbit/s".parse::<Rate>(), Ok(Rate(100_000_000)));
    assert_eq!("1.5GiB/s".parse::<Rate>(), Ok(Rate(1_610_612_736)));
    assert!("200MiB".parse::<Rate>().is_err());
    assert!("0MB/s".parse::<Rate>().is_err());
    assert!("fast/s".parse::<Rate>().is_err());
}

#[test]
fn rates_and_durations_beyond_their_limits_are_refused_naming_the_limit() {
    assert_eq!("100GiB/s".parse::<Rate>(), Ok(Rate::MAX));
    for huge in ["101GiB/s", "99999999999999999999GiB/s", "1000Gbit/s"] {
        let e = huge.parse::<Rate>().unwrap_err();
        assert!(e.contains("above the limit of 100GiB/s") && e.contains(huge), "{huge}: {e}");
    }
    assert_eq!("3650d".parse::<Dur>(), Ok(Dur::MAX));
    for huge in ["3651d", "100000000h", "99999999999s"] {
        let e = huge.parse::<Dur>().unwrap_err();
        assert!(e.contains("above the limit of"), "{huge}: {e}");
    }
    // A config value goes through the same parse, so it is refused with its line.
    let (location, message) = parse_error("[upload]\nbandwidth = \"99999999999999999999GiB/s\"\n");
    assert!(location.ends_with(":2"), "{location}");
    assert!(message.contains("100GiB/s"), "{message}");
    let (location, message) = parse_error("[[watch]]\npath = \"/x\"\nrescan = \"99999999h\"\n");
    assert!(location.ends_with(":3"), "{location}");
    assert!(message.contains("above the limit"), "{message}");
}

#[test]
fn http_limits_default_and_are_bounded() {
    let h = parse("[http]\n").unwrap().http.unwrap();
    assert_eq!(h.max_connections, 64);
    assert!(h.allowed_hosts.is_empty());
    let ok = parse(
        "[http]\nallowed_hosts = [\"sync.render07.studio.lan\", \".farm.lan\", \"10.0.0.5\", \"::1\", \"*\"]\nmax_connections = 4096\n",
    );
    assert_eq!(ok.unwrap().http.unwrap().allowed_hosts.len(), 5);
    for (text, line, what) in [
        ("[http]\nmax_connections = 0\n", 2, "http.max_connections: 0 is out of range; use 1 to 4096"),
        ("[http]\nmax_connections = 5000\n", 2, "http.max_connections: 5000 is out of range"),
        ("[http]\nallowed_hosts = [\"http://sync.lan\"]\n", 2, "is a URL"),
        ("[http]\nallowed_hosts = [\"sync.lan:9464\"]\n", 2, "has a port"),
        ("[http]\nallowed_hosts = [\"\"]\n", 2, "is empty"),
        ("[http]\nallowed_hosts = [\"*.lan\"]\n", 2, "is not a host name"),
    ] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert!(
            p[0].starts_with(&format!("/etc/sgs/config.toml:{line}: http.")) && p[0].contains(what),
            "{text}: {p:?}"
        );
    }
}

#[test]
fn weekdays_and_times() {
    assert_eq!(parse_weekday("mon"), Some(0));
    assert_eq!(parse_weekday("Sunday"), Some(6));
    assert_eq!(parse_weekday("mo"), None);
    assert_eq!(parse_weekday("monk"), None);
    assert_eq!(parse_hhmm("19:00"), Some(1140));
    assert_eq!(parse_hhmm("7:05"), Some(425));
    assert_eq!(parse_hhmm("24:00"), None);
    assert_eq!(parse_hhmm("12:60"), None);
    assert_eq!(parse_hhmm("1900"), None);
}

#[test]
fn api_key_never_shows_in_debug_or_display() {
    let key = ApiKey::new("sk-very-secret");
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
    assert_eq!(format!("{key}"), "***");
    assert_eq!(key.expose(), "sk-very-secret");
}

#[test]
fn api_key_from_env_var() {
    let mut cfg = parse("").unwrap();
    cfg.api.api_key_env = "SGS_TEST_KEY_PRESENT_4711".into();
    // SAFETY: this variable name is used by this test only.
    unsafe { std::env::set_var("SGS_TEST_KEY_PRESENT_4711", " k3y \n") };
    assert_eq!(cfg.api_key().unwrap().expose(), "k3y");
    cfg.api.api_key_env = "SGS_TEST_KEY_ABSENT_4711".into();
    let err = cfg.api_key().unwrap_err().to_string();
    assert!(err.contains("SGS_TEST_KEY_ABSENT_4711 is not set"), "{err}");
}

#[test]
fn api_key_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, "secret-from-file\n").unwrap();
    crate::owner_only::open_to_everyone(&file).unwrap();
    let mut cfg = parse("").unwrap();
    cfg.api.api_key_file = Some(file.clone());
    let err = cfg.api_key().unwrap_err().to_string();
    assert!(err.contains(&crate::owner_only::fix_hint(&file)), "{err}");
    assert!(!err.contains("secret-from-file"), "{err}");
    #[cfg(unix)]
    {
        // Windows under Wine: a DACL set is not kept (Wine 8 maps it onto Unix mode
        // bits and leaves Everyone's read), so owner-only is observed on Unix only.
        crate::owner_only::restrict(&file).unwrap();
        assert_eq!(cfg.api_key().unwrap().expose(), "secret-from-file");
    }
}

#[test]
fn effective_settings_render_and_round_trip() {
    let cfg = parse("[[watch]]\npath = \"/w\"\nsettle = \"45s\"\n[upload]\nbandwidth = \"1MiB/s\"\n").unwrap();
    let text = cfg.to_toml();
    assert!(text.contains("settle = \"45s\""), "{text}");
    let again = Config::parse(&text, Path::new("/etc/sgs/config.toml")).unwrap();
    assert_eq!(again.watch[0].settle, Dur::secs(45));
    assert_eq!(again.upload.bandwidth, Some(Rate(1024 * 1024)));
}

#[test]
fn check_environment_reports_missing_folders() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[journal]\npath = '{}/j.db'\n[[watch]]\npath = '{}/missing'\nafter_upload = \"move\"\nmove_to = '{}/nowhere'\n",
        dir.path().display(),
        dir.path().display(),
        dir.path().display()
    );
    let cfg = parse(&text).unwrap();
    let Err(ConfigError::Invalid(p)) = cfg.check_environment() else { panic!("expected problems") };
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].contains("watch[0].path") && p[0].contains("missing is not an existing folder"), "{p:?}");
    assert!(p[1].contains("watch[0].move_to"), "{p:?}");
}

#[test]
fn minimal_and_watch_new_validate() {
    let mut cfg = Config::minimal("http://127.0.0.1:9", Path::new("/tmp/j.db"));
    cfg.watch.push(WatchConfig::new("/tmp/drop"));
    assert!(cfg.validate(None).is_ok());
    cfg.api.endpoint = "http://example.com".into();
    let err = cfg.validate(None).unwrap_err().to_string();
    assert!(err.contains("api.endpoint"), "{err}");
}

#[test]
fn without_config_the_system_file_then_the_xdg_one_is_used_and_an_error_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let system = dir.path().join("etc/config.toml");
    let xdg = dir.path().join("xdg");
    let home = dir.path().join("home");
    let user_xdg = xdg.join("spatialgen-sync").join("config.toml");
    let user_home = home.join(".config/spatialgen-sync/config.toml");

    let err = find_config(&system, Some(&xdg), Some(&home)).unwrap_err().to_string();
    assert!(err.contains("--config") && err.contains(&system.display().to_string()), "{err}");
    assert!(err.contains(&user_xdg.display().to_string()), "{err}");

    std::fs::create_dir_all(user_home.parent().unwrap()).unwrap();
    std::fs::write(&user_home, "").unwrap();
    assert_eq!(find_config(&system, None, Some(&home)).unwrap(), user_home, "~/.config without XDG_CONFIG_HOME");
    assert_eq!(
        find_config(&system, Some(Path::new("relative")), Some(&home)).unwrap(),
        user_home,
        "a relative XDG_CONFIG_HOME is ignored"
    );

    std::fs::create_dir_all(user_xdg.parent().unwrap()).unwrap();
    std::fs::write(&user_xdg, "").unwrap();
    assert_eq!(find_config(&system, Some(&xdg), Some(&home)).unwrap(), user_xdg);

    std::fs::create_dir_all(system.parent().unwrap()).unwrap();
    std::fs::write(&system, "").unwrap();
    assert_eq!(find_config(&system, Some(&xdg), Some(&home)).unwrap(), system, "the system config first");
}

#[test]
fn http_listen_comes_from_http_then_metrics_then_the_loopback_default() {
    assert_eq!(parse("").unwrap().http_listen(), None, "no [http], no [metrics] listen: no server");
    assert_eq!(parse("[http]\n").unwrap().http_listen(), Some(DEFAULT_HTTP_LISTEN));
    assert!(DEFAULT_HTTP_LISTEN.ip().is_loopback());
    let old = parse("[metrics]\nlisten = \"127.0.0.1:9100\"\n").unwrap();
    assert_eq!(old.http_listen(), Some("127.0.0.1:9100".parse().unwrap()), "the older spelling still works");
    let new = parse("[http]\nlisten = \"127.0.0.1:9200\"\n").unwrap();
    assert_eq!(new.http_listen(), Some("127.0.0.1:9200".parse().unwrap()));
    let both = "[metrics]\nlisten = \"127.0.0.1:9100\"\n\n[http]\nlisten = \"127.0.0.1:9200\"\n";
    let p = problems(both);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("/etc/sgs/config.toml:5: http.listen:") && p[0].contains("metrics.listen"), "{p:?}");
}

#[test]
fn a_listen_address_other_hosts_reach_needs_a_token_file() {
    let p = problems("[http]\nlisten = \"0.0.0.0:9464\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("/etc/sgs/config.toml:2: http.listen: 0.0.0.0:9464") && p[0].contains("token_file"),
        "{p:?}"
    );
    let p = problems("[metrics]\nlisten = \"[::]:9464\"\n");
    assert!(p[0].starts_with("/etc/sgs/config.toml:2: metrics.listen:"), "{p:?}");
    let ok = parse("[http]\nlisten = \"0.0.0.0:9464\"\ntoken_file = \"token\"\n").unwrap();
    let http = ok.http.as_ref().unwrap();
    assert_eq!(http.token_file.as_deref(), Some(Path::new("/etc/sgs/token")), "relative to the config file");
    assert!(ok.to_toml().contains("[http]"), "{}", ok.to_toml());
}

#[cfg(unix)]
#[test]
fn the_http_token_file_is_checked_like_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "console-token-xyz\n").unwrap();
    crate::owner_only::open_to_everyone(&file).unwrap();
    let mut cfg = parse("[http]\n").unwrap();
    assert!(cfg.http_token().unwrap().is_none(), "no token_file: none");
    cfg.http.as_mut().unwrap().token_file = Some(file.clone());
    let err = cfg.http_token().unwrap_err().to_string();
    assert!(err.starts_with("http.token_file: ") && err.contains(&crate::owner_only::fix_hint(&file)), "{err}");
    assert!(!err.contains("console-token-xyz"), "{err}");
    #[cfg(unix)]
    {
        // Windows under Wine: a DACL set is not kept (Wine 8 maps it onto Unix mode
        // bits and leaves Everyone's read), so owner-only is observed on Unix only.
        crate::owner_only::restrict(&file).unwrap();
        let token = cfg.http_token().unwrap().unwrap();
        assert!(token.matches("console-token-xyz"));
        assert!(!token.matches("console-token-xy") && !token.matches("console-token-xyz!") && !token.matches(""));
        assert_eq!(format!("{token:?}"), "HttpToken(***)");
        std::fs::write(&file, "  \n").unwrap();
        assert!(cfg.http_token().unwrap_err().to_string().contains("is empty"));
    }
}

#[test]
fn forget_after_is_off_unless_set_and_takes_days() {
    assert_eq!(parse("").unwrap().journal.forget_after, None, "absent: history is kept");
    assert_eq!(parse("[journal]\nforget_after = \"off\"\n").unwrap().journal.forget_after, None);
    assert_eq!(parse("[journal]\nforget_after = \"OFF\"\n").unwrap().journal.forget_after, None);
    let cfg = parse("[journal]\nforget_after = \"180d\"\n").unwrap();
    assert_eq!(cfg.journal.forget_after, Some(Dur::secs(180 * 24 * 3600)));
    assert_eq!(parse("[journal]\nforget_after = \"36h\"\n").unwrap().journal.forget_after, Some(Dur::secs(36 * 3600)));
}

#[test]
fn a_bad_forget_after_names_its_line() {
    let (loc, msg) = parse_error("[journal]\npath = \"/j.sqlite3\"\nforget_after = \"180 fortnights\"\n");
    assert_eq!(loc, "/etc/sgs/config.toml:3");
    assert!(msg.contains("invalid duration") && msg.contains("\"off\""), "{msg}");
    let (loc, _) = parse_error("[journal]\nforget_after = 180\n");
    assert_eq!(loc, "/etc/sgs/config.toml:2", "a number is not a duration");
    let p = problems("[journal]\n\nforget_after = \"2h\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("/etc/sgs/config.toml:3: journal.forget_after: 2h is too short; use at least 1d"),
        "{p:?}"
    );
}

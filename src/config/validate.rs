//! Validation of what types cannot express, section by section: each
//! section's check pushes its problems as `(key path, message)`, and
//! `Config::problems` runs them in file order (`[api]`, `[upload]`, `[log]`,
//! `[hooks]`, `[http]`, then every `[[watch]]`), so every problem is reported at once
//! and always in the same order. The key paths become `file:line: key:`
//! prefixes through `locate.rs`.

use std::time::Duration;

use super::env::check_endpoint;
use super::fleet::fleet_name_problem;
use super::locate::{Seg, key_path, line_of, locate};
use super::sections::{ApiConfig, HooksConfig, HttpConfig, JournalConfig, LogConfig, UploadConfig, WindowConfig};
use super::units::{Dur, parse_hhmm, parse_weekday};
use super::watch::{AfterUpload, WatchConfig};
use super::{Config, ConfigError};

/// The shortest `[journal] forget_after`: one day.
pub const MIN_FORGET_AFTER: Dur = Dur::secs(24 * 3600);

/// One problem: the key path it is at, and what is wrong there.
type Problem = (Vec<Seg<'static>>, String);

impl Config {
    /// Every problem types cannot catch, as `(key path, message)`: each
    /// section's own check, in file order. `[metrics]` has nothing to check
    /// beyond its types.
    fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = Vec::new();
        self.api.problems(&mut out);
        self.journal.problems(&self.watch, &mut out);
        self.upload.problems(&mut out);
        self.log.problems(&mut out);
        self.hooks.problems(&mut out);
        self.http_problems(&mut out);
        for (i, w) in self.watch.iter().enumerate() {
            w.problems(i, &self.watch[..i], &mut out);
        }
        out
    }

    /// Every problem, as `file:line: key: message` when the config was
    /// parsed from `text` (`file: key: message` when the key is not in it),
    /// or as `key: message` for a config built in code (`text` is `None`).
    pub fn validate(&self, text: Option<&str>) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let Some(text) = text else {
            return Err(ConfigError::Invalid(
                problems.into_iter().map(|(path, msg)| format!("{}: {msg}", key_path(&path))).collect(),
            ));
        };
        let doc = toml::de::DeTable::parse(text).ok();
        Err(ConfigError::Invalid(
            problems
                .into_iter()
                .map(|(path, msg)| {
                    let line = doc.as_ref().and_then(|d| locate(d.get_ref(), &path)).map(|off| line_of(text, off));
                    match line {
                        Some(l) => format!("{}:{l}: {}: {msg}", self.source.display(), key_path(&path)),
                        None => format!("{}: {}: {msg}", self.source.display(), key_path(&path)),
                    }
                })
                .collect(),
        ))
    }
}

impl Config {
    /// `[http]` (with `[metrics] listen`, its older spelling): one address
    /// at most, and a token for any address other hosts can reach.
    fn http_problems(&self, out: &mut Vec<Problem>) {
        let http_listen = self.http.as_ref().and_then(|h| h.listen);
        if http_listen.is_some() && self.metrics.listen.is_some() {
            out.push((
                vec![Seg::Key("http"), Seg::Key("listen")],
                "and metrics.listen are both set; metrics.listen is the older spelling of http.listen: keep one".into(),
            ));
        }
        if let Some(h) = &self.http {
            let at = |k: &'static str| vec![Seg::Key("http"), Seg::Key(k)];
            let limit = HttpConfig::MAX_CONNECTIONS_LIMIT;
            if h.max_connections == 0 || h.max_connections > limit {
                out.push((at("max_connections"), format!("{} is out of range; use 1 to {limit}", h.max_connections)));
            }
            for (i, name) in h.allowed_hosts.iter().enumerate() {
                if let Some(why) = allowed_host_problem(name) {
                    out.push((vec![Seg::Key("http"), Seg::Key("allowed_hosts"), Seg::Index(i)], why));
                }
            }
        }
        let has_token = self.http.as_ref().is_some_and(|h| h.token_file.is_some());
        if let Some(addr) = self.http_listen()
            && !addr.ip().is_loopback()
            && !has_token
        {
            let at = if http_listen.is_some() || self.metrics.listen.is_none() { "http" } else { "metrics" };
            out.push((
                vec![Seg::Key(at), Seg::Key("listen")],
                format!(
                    "{addr} is reachable from other hosts; set [http] token_file (a 0600 file holding the token \
                     that every POST/PUT must carry) or listen on 127.0.0.1"
                ),
            ));
        }
    }
}

/// Why `name` cannot be an `[http] allowed_hosts` entry: it must be a
/// host name or an IP address as a `Host` header carries it, without
/// scheme, port or path (the port is not compared).
fn allowed_host_problem(name: &str) -> Option<String> {
    let bare = name.strip_prefix('.').unwrap_or(name);
    if name == "*" {
        return None;
    }
    if bare.is_empty() {
        return Some("is empty; write a host name such as \"sync.studio.lan\"".into());
    }
    if name.contains("://") || name.contains('/') {
        return Some(format!("{name:?} is a URL; write the host name alone, e.g. \"sync.studio.lan\""));
    }
    let is_v6 = bare.starts_with('[') || bare.parse::<std::net::Ipv6Addr>().is_ok();
    if !is_v6 && bare.contains(':') {
        return Some(format!("{name:?} has a port; write the host name alone (the port is not compared)"));
    }
    if bare.chars().any(|c| c.is_whitespace() || c.is_control() || c == '*') {
        return Some(format!("{name:?} is not a host name (\"*\" alone allows any host)"));
    }
    None
}

impl ApiConfig {
    /// `[api]`: the endpoint rule, and a way to find the key.
    fn problems(&self, out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("api"), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        if let Err(e) = check_endpoint(&self.endpoint) {
            err(at("endpoint"), e);
        }
        if self.api_key_env.trim().is_empty() && self.api_key_file.is_none() {
            err(at("api_key_env"), "must name an environment variable (or set api_key_file)".into());
        }
    }
}

impl JournalConfig {
    /// `[journal]`: `forget_after` not under a day; `path` or `url`, a
    /// vetted URL, the node's name, the lease; with `url`, every
    /// `[[watch]]` has a `name`, each its own.
    fn problems(&self, watches: &[WatchConfig], out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("journal"), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        if let Some(age) = self.forget_after
            && age < MIN_FORGET_AFTER
        {
            // The sweep runs once a day, so a shorter age would not be kept
            // to anyway; and a day leaves time to read what happened (and
            // for notifications held up by a hook or webhook that was down).
            err(
                at("forget_after"),
                format!("{age} is too short; use at least 1d (ended groups are forgotten once a day), or \"off\""),
            );
        }
        let Some(url) = &self.url else {
            for k in ["node", "password_file"] {
                let set = if k == "node" { self.node.is_some() } else { self.password_file.is_some() };
                if set {
                    err(at(k), "needs url (a PostgreSQL database shared by a fleet)".into());
                }
            }
            return;
        };
        if self.path_given {
            err(at("url"), "path and url are exclusive: a journal is a SQLite file or a PostgreSQL database".into());
        }
        if let Err(e) = url.vet() {
            err(at("url"), e);
        }
        if let Some(n) = &self.node
            && let Some(e) = fleet_name_problem(n)
        {
            err(at("node"), e);
        }
        if self.lease.0 < Duration::from_secs(3) {
            err(at("lease"), format!("{} is too short; use at least 3s (it is renewed every third of it)", self.lease));
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, w) in watches.iter().enumerate() {
            let name_at = vec![Seg::Key("watch"), Seg::Index(i), Seg::Key("name")];
            match w.name.as_deref() {
                None => err(
                    vec![Seg::Key("watch"), Seg::Index(i), Seg::Key("path")],
                    "needs a name (the folder's fleet-wide name) because [journal] has url".into(),
                ),
                Some(n) => {
                    if let Some(e) = fleet_name_problem(n) {
                        err(name_at, e);
                    } else if seen.contains(&n) {
                        err(name_at, format!("{n:?} names another watch folder too; each needs its own"));
                    } else {
                        seen.push(n);
                    }
                }
            }
        }
    }
}

impl UploadConfig {
    /// `[upload]`: limits and retry delays, then every `[[upload.window]]`.
    fn problems(&self, out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("upload"), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        if self.max_groups == 0 {
            err(at("max_groups"), "must be at least 1".into());
        }
        if self.max_parts_in_flight == 0 {
            err(at("max_parts_in_flight"), "must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.part_url_batch) {
            err(at("part_url_batch"), "must be between 1 and 10000 (the API's limit per call)".into());
        }
        if self.retry_attempts == 0 {
            err(at("retry_attempts"), "must be at least 1".into());
        }
        if self.retry_base.0.is_zero() {
            err(at("retry_base"), "must be greater than zero (a zero delay would hot-loop)".into());
        }
        if self.retry_cap < self.retry_base {
            err(
                at("retry_cap"),
                format!("({}) must not be shorter than retry_base ({})", self.retry_cap, self.retry_base),
            );
        }
        for (i, win) in self.window.iter().enumerate() {
            win.problems(i, out);
        }
    }
}

impl WindowConfig {
    /// `[[upload.window]]` entry `i`: day names and `HH:MM` times.
    fn problems(&self, i: usize, out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("upload"), Seg::Key("window"), Seg::Index(i), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        for d in &self.days {
            if parse_weekday(d).is_none() {
                err(at("days"), format!("unknown day {d:?}; expected mon, tue, wed, thu, fri, sat or sun"));
            }
        }
        for (k, v) in [("from", &self.from), ("to", &self.to)] {
            if parse_hhmm(v).is_none() {
                err(at(k), format!("invalid time {v:?}; write it as HH:MM, e.g. \"19:00\""));
            }
        }
    }
}

impl LogConfig {
    /// `[log]`: the filter parses, and at least one rotated file is kept.
    fn problems(&self, out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("log"), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        if let Err(e) = self.level.parse::<tracing_subscriber::EnvFilter>() {
            err(at("level"), format!("invalid filter {:?}: {e}", self.level));
        }
        if self.keep == 0 {
            err(at("keep"), "must be at least 1".into());
        }
    }
}

impl HooksConfig {
    /// `[hooks]`: every command names a program, and the webhook is http(s).
    fn problems(&self, out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("hooks"), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        for (k, v) in
            [("on_complete", &self.on_complete), ("on_failure", &self.on_failure), ("on_rejected", &self.on_rejected)]
        {
            if v.as_ref().is_some_and(|argv| argv.is_empty() || argv[0].trim().is_empty()) {
                err(at(k), "must be a non-empty list: [\"/path/to/program\", \"arg\", ...]".into());
            }
        }
        if let Some(url) = &self.webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            err(at("webhook"), format!("{url:?} is not an http(s) URL"));
        }
        if self.webhook_secret_file.is_some() && self.webhook.is_none() {
            err(at("webhook_secret_file"), "is set, but there is no hooks.webhook to sign".into());
        }
    }
}

impl WatchConfig {
    /// `[[watch]]` entry `i`. `earlier` are the entries before it: its path
    /// must not overlap theirs (the problem is reported on the later one).
    fn problems(&self, i: usize, earlier: &[WatchConfig], out: &mut Vec<Problem>) {
        let at = |k: &'static str| vec![Seg::Key("watch"), Seg::Index(i), Seg::Key(k)];
        let mut err = |path: Vec<Seg<'static>>, msg: String| out.push((path, msg));
        if self.path.as_os_str().is_empty() {
            err(at("path"), "must not be empty".into());
        }
        if let Some(other) =
            earlier.iter().map(|e| &e.path).find(|p| self.path.starts_with(p) || p.starts_with(&self.path))
        {
            err(at("path"), format!("{} overlaps another watch folder ({})", self.path.display(), other.display()));
        }
        if self.settle.0.is_zero() && self.ready_marker.is_none() {
            err(at("settle"), "must be greater than zero unless ready_marker is set".into());
        }
        if let Some(p) = self.poll
            && p.0 < Duration::from_millis(100)
        {
            err(at("poll"), format!("{p} is too short; use at least 100ms"));
        }
        if self.rescan.0 < Duration::from_secs(1) {
            err(at("rescan"), "must be at least 1s".into());
        }
        if self.media_wait.0 < Duration::from_secs(1) || self.media_wait.0 > Duration::from_secs(7 * 86_400) {
            err(
                at("media_wait"),
                format!(
                    "{} is out of range; use 1s to 7d (how long an unfinished container may stay quiet)",
                    self.media_wait
                ),
            );
        }
        if let Some(m) = &self.ready_marker
            && (m.is_empty() || m.contains('/') || m.contains('\\'))
        {
            err(at("ready_marker"), format!("{m:?} must be a plain file name"));
        }
        match (self.after_upload, &self.move_to) {
            (AfterUpload::Move, None) => err(at("move_to"), "is required when after_upload = \"move\"".into()),
            (AfterUpload::Move, Some(dest)) if dest.starts_with(&self.path) => err(
                at("move_to"),
                format!("{} is inside the watch folder; uploaded exports would be found again", dest.display()),
            ),
            (AfterUpload::Keep | AfterUpload::Delete, Some(_)) => {
                err(at("move_to"), "is only used with after_upload = \"move\"".into())
            }
            _ => {}
        }
        for (k, lang, audio) in
            [("audio_language", &self.audio_language, true), ("subtitle_language", &self.subtitle_language, false)]
        {
            if let Some(l) = lang {
                let l = l.to_ascii_lowercase();
                let ok = crate::model::LANGUAGES.contains(&l.as_str()) || (audio && l == crate::model::NO_LANGUAGE);
                if !ok {
                    err(
                        at(k),
                        format!(
                            "{l:?} is not a supported language tag; supported: {}{}",
                            crate::model::LANGUAGES.join(" "),
                            if audio { " zxx" } else { "" }
                        ),
                    );
                }
            }
        }
        for (role, patterns) in self.roles.entries() {
            for p in patterns {
                if let Err(e) = globset::Glob::new(p) {
                    err(
                        vec![Seg::Key("watch"), Seg::Index(i), Seg::Key("roles"), Seg::Key(role)],
                        format!("bad glob {p:?}: {}", e.kind()),
                    );
                }
            }
        }
    }
}

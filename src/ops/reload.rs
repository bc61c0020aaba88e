//! What a config reload changes, so the running agent applies only that.
//!
//! [`diff_reload`] compares two *validated* configs section by section and
//! key by key (through their serialized form, so a key added to the schema
//! is compared without touching this file). It decides nothing by itself:
//! the caller applies the plan (add/remove watchers, set the throttle, swap
//! the schedule and the notifier, re-bind metrics) and logs
//! [`ReloadPlan`]'s `Display` as the one-line summary of what happened.
//! Uploads in flight are never part of a plan: they continue under the
//! limits now in force.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, ConfigError};

/// One watch folder whose settings changed (matched by path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchChange {
    pub path: PathBuf,
    /// Dotted keys that differ, e.g. `settle`, `roles.video`, `priority`.
    pub keys: Vec<String>,
}

/// The difference between the running config and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// `[[watch]]` entries whose path is new: start watching (and rescan) them.
    pub watch_added: Vec<PathBuf>,
    /// Paths no longer watched: stop their watchers; groups already queued or
    /// uploading from them continue.
    pub watch_removed: Vec<PathBuf>,
    /// Same path, other settings: restart that watcher with the new settings.
    pub watch_changed: Vec<WatchChange>,
    /// `[upload]` keys other than `bandwidth` and `window` (concurrency, retries, …).
    pub upload_changed: Vec<String>,
    /// `[upload] bandwidth` changed.
    pub bandwidth_changed: bool,
    /// `[[upload.window]]` changed.
    pub windows_changed: bool,
    /// `[hooks]` changed: build a new notifier.
    pub hooks_changed: bool,
    /// `[http]` or `[metrics] listen` changed: move the HTTP listener to its
    /// new address and take the token file again.
    pub metrics_changed: bool,
    /// `[log] level` changed (a reloadable filter can take it live).
    pub log_level_changed: bool,
    /// Keys that only take effect after a restart: `api.*`, `journal.*`,
    /// and the log output settings. The running agent keeps the old values.
    pub restart_required: Vec<String>,
}

impl ReloadPlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }

    /// The upload schedule (windows and their bandwidth) must be rebuilt.
    pub fn schedule_changed(&self) -> bool {
        self.bandwidth_changed || self.windows_changed
    }
}

impl fmt::Display for ReloadPlan {
    /// One line: `watch +/a -/b ~/c(settle); upload: max_groups; bandwidth; windows; hooks; …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts: Vec<String> = Vec::new();
        for p in &self.watch_added {
            parts.push(format!("watch added {}", p.display()));
        }
        for p in &self.watch_removed {
            parts.push(format!("watch removed {}", p.display()));
        }
        for c in &self.watch_changed {
            parts.push(format!("watch {} changed ({})", c.path.display(), c.keys.join(", ")));
        }
        if !self.upload_changed.is_empty() {
            parts.push(format!("upload: {}", self.upload_changed.join(", ")));
        }
        for (flag, what) in [
            (self.bandwidth_changed, "bandwidth"),
            (self.windows_changed, "upload windows"),
            (self.hooks_changed, "hooks"),
            (self.metrics_changed, "http listener"),
            (self.log_level_changed, "log level"),
        ] {
            if flag {
                parts.push(what.to_string());
            }
        }
        if !self.restart_required.is_empty() {
            parts.push(format!("needs a restart to apply: {}", self.restart_required.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// What changes from `old` to `new`. Both must already be validated.
pub fn diff_reload(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();

    for w in &new.watch {
        match old.watch.iter().find(|o| o.path == w.path) {
            None => plan.watch_added.push(w.path.clone()),
            Some(o) => {
                let keys = changed_keys(&json(o), &json(w));
                if !keys.is_empty() {
                    plan.watch_changed.push(WatchChange { path: w.path.clone(), keys });
                }
            }
        }
    }
    plan.watch_removed =
        old.watch.iter().filter(|o| !new.watch.iter().any(|w| w.path == o.path)).map(|o| o.path.clone()).collect();

    for key in changed_keys(&json(&old.upload), &json(&new.upload)) {
        match key.split('.').next() {
            Some("bandwidth") => plan.bandwidth_changed = true,
            Some("window") => plan.windows_changed = true,
            _ => plan.upload_changed.push(key),
        }
    }
    plan.hooks_changed = !changed_keys(&json(&old.hooks), &json(&new.hooks)).is_empty();
    plan.metrics_changed = !changed_keys(&json(&old.metrics), &json(&new.metrics)).is_empty()
        || !changed_keys(&json(&old.http), &json(&new.http)).is_empty();
    for key in changed_keys(&json(&old.log), &json(&new.log)) {
        if key == "level" {
            plan.log_level_changed = true;
        } else {
            plan.restart_required.push(format!("log.{key}"));
        }
    }
    for (section, a, b) in
        [("api", json(&old.api), json(&new.api)), ("journal", json(&old.journal), json(&new.journal))]
    {
        plan.restart_required.extend(changed_keys(&a, &b).into_iter().map(|k| format!("{section}.{k}")));
    }
    plan
}

/// Read and validate `path` as the new config and diff it against `current`.
/// On error the caller keeps running with `current`; the error names the file, line and key.
pub fn load_reload(path: &Path, current: &Config) -> Result<(Config, ReloadPlan), ConfigError> {
    let new = Config::load(path)?;
    let plan = diff_reload(current, &new);
    Ok((new, plan))
}

fn json(v: &impl Serialize) -> Value {
    // Config types are plain data (strings, numbers, paths, maps): serializing cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Dotted paths of the keys that differ; a missing key counts as null, arrays compare whole.
fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out
}

fn walk(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                walk(x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), &path, out);
            }
        }
        (Value::Object(_), Value::Null) | (Value::Null, Value::Object(_)) => {
            let empty = Value::Object(serde_json::Map::new());
            let (a, b) = if a.is_null() { (&empty, b) } else { (a, &empty) };
            walk(a, b, prefix, out);
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests;

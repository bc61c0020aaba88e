//! The Windows and macOS release files (scripts/release.sh zips and tars
//! them): the WinSW service definition runs the binary the way the README
//! and install.ps1 say, and the platform flavours of the example config
//! (scripts/platform-config.sh) are valid configs whose private files are
//! where the installers put them. The release script itself (the build, the
//! zip, `check` under Wine) runs in CI, not here: it takes minutes.

#[cfg(unix)]
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use spatialgen_sync::cli::{Cli, Command};
use spatialgen_sync::config::Config;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// install.ps1's default for `param`, with PowerShell's `$env:Name` written
/// as WinSW's (and cmd's) `%Name%`.
fn ps_default(ps: &str, param: &str) -> String {
    let head = format!("]${param} = \"");
    let line = ps.lines().find(|l| l.contains(&head)).unwrap_or_else(|| panic!("install.ps1 has no -{param}"));
    let value = line.split_once(&head).unwrap().1.trim_end().trim_end_matches(',');
    let value = value.strip_suffix('"').unwrap_or_else(|| panic!("{line}"));
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find("$env:") {
        out.push_str(&rest[..at]);
        let name: String = rest[at + 5..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        out.push_str(&format!("%{name}%"));
        rest = &rest[at + 5 + name.len()..];
    }
    out.push_str(rest);
    out
}

/// A WinSW duration: a number and sec/secs/min/mins/hour/hours/day/days
/// (or ms), with or without a space between.
fn winsw_duration(text: &str) -> Duration {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().unwrap_or_else(|_| panic!("not a WinSW duration: {text:?}"));
    let secs = match t[digits..].trim() {
        "ms" => return Duration::from_millis(n),
        "" | "sec" | "secs" => n,
        "min" | "mins" => n * 60,
        "hour" | "hours" => n * 3600,
        "day" | "days" => n * 86_400,
        unit => panic!("unknown WinSW duration unit {unit:?} in {text:?}"),
    };
    Duration::from_secs(secs)
}

/// Split a Windows command line into arguments (double quotes group, no
/// escapes: the definition's arguments have none).
fn split_args(line: &str) -> Vec<String> {
    let (mut args, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    args.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    assert!(!quoted, "unbalanced quotes in {line:?}");
    if any {
        args.push(cur);
    }
    args
}

/// The README's "Running as a service" Windows bullet.
fn readme_windows() -> String {
    let readme = read("README.md");
    let section = readme.split("## Running as a service").nth(1).expect("README has Running as a service");
    let section = section.split("\n## ").next().unwrap();
    section.split("- **Windows**").nth(1).expect("a Windows bullet").to_string()
}

/// Room the agent needs after `shutdown_grace` to record the parts it
/// stopped and close the journal, before WinSW kills it.
const AFTER_GRACE: Duration = Duration::from_secs(5);

#[test]
fn the_winsw_definition_runs_the_agent_on_the_config_install_ps1_writes() {
    let text = read("packaging/windows/spatialgen-sync.xml");
    let doc = roxmltree::Document::parse(&text).expect("spatialgen-sync.xml is well-formed XML");
    let service = doc.root_element();
    assert!(service.has_tag_name("service"), "the root is <{}>", service.tag_name().name());
    let all = |tag: &str| service.children().filter(move |n| n.has_tag_name(tag)).collect::<Vec<_>>();
    let one = |tag: &str| {
        let found = all(tag);
        assert_eq!(found.len(), 1, "<{tag}> appears {} times", found.len());
        found[0].text().unwrap_or("").trim().to_string()
    };
    let ps = read("packaging/windows/install.ps1");

    // The service's name is the one install.ps1 and the README use.
    assert_eq!(one("id"), "spatialgen-sync");
    assert!(ps.contains("Name='spatialgen-sync'") && ps.contains("Start-Service spatialgen-sync"));
    assert!(read("packaging/windows/INSTALL.txt").contains("Start-Service spatialgen-sync"));

    // The agent beside the wrapper: install.ps1 copies both .exe files into
    // one folder and the definition there under the wrapper's base name, so
    // %BASE% (the wrapper's folder) holds spatialgen-sync.exe.
    assert_eq!(one("executable"), r"%BASE%\spatialgen-sync.exe");
    assert!(ps.contains("Copy-Item -Force spatialgen-sync.exe, spatialgen-sync-service.exe -Destination $InstallDir"));
    assert!(ps.contains(r#"-Path "$InstallDir\spatialgen-sync-service.xml""#));

    // `run --config` on the file install.ps1 writes: $DataDir\config.toml.
    let data = ps_default(&ps, "DataDir");
    assert_eq!(data, r"%ProgramData%\spatialgen-sync");
    assert!(ps.contains(r#"$config = Join-Path $DataDir "config.toml""#));
    let config = format!(r"{data}\config.toml");
    let arguments = one("arguments");
    assert_eq!(arguments, format!(r#"run --config "{config}""#));
    assert!(readme_windows().contains(&format!("`spatialgen-sync.exe run --config \"{config}\"`")), "README");
    // ... and the real command line takes those arguments as `run` on that file.
    let argv = std::iter::once("spatialgen-sync".to_string()).chain(split_args(&arguments));
    match Cli::try_parse_from(argv).expect("the definition's arguments parse").command {
        Command::Run(run) => assert_eq!(run.config.config, Some(PathBuf::from(&config))),
        other => panic!("the service runs {other:?}, not run"),
    }
    assert_eq!(one("workingdirectory"), data);
    // A -DataDir other than the default is written into the installed copy.
    assert!(ps.contains(r"$definition.Replace('%ProgramData%\spatialgen-sync', $DataDir)"));

    // Logs go to a folder install.ps1 creates.
    assert_eq!(one("logpath"), format!(r"{data}\logs"));
    assert!(ps.lines().any(|l| l.starts_with("New-Item -ItemType Directory") && l.contains(r#""$DataDir\logs""#)));
    assert_eq!(all("log").len(), 1);

    // WinSW's Ctrl+C, then stoptimeout, then TerminateProcess: the agent's
    // default shutdown_grace and the Windows example's fit inside it.
    let stop = winsw_duration(&one("stoptimeout"));
    let default_grace = Config::minimal("https://spatialgen.com", Path::new("journal.sqlite3")).upload.shutdown_grace.0;
    assert!(stop >= default_grace + AFTER_GRACE, "stoptimeout {stop:?} vs the default grace {default_grace:?}");
    #[cfg(unix)]
    {
        let example = windows_example();
        let grace = Config::parse(&example, Path::new("/data/config.toml")).unwrap().upload.shutdown_grace.0;
        assert!(stop >= grace + AFTER_GRACE, "stoptimeout {stop:?} vs the Windows example's grace {grace:?}");
    }

    // A crash (a non-zero exit) restarts the service, after a delay.
    let failures = all("onfailure");
    assert!(!failures.is_empty(), "no <onfailure>");
    for f in &failures {
        assert_eq!(f.attribute("action"), Some("restart"), "{f:?}");
        let delay = winsw_duration(f.attribute("delay").expect("a delay"));
        assert!(delay >= Duration::from_secs(1) && delay <= Duration::from_secs(300), "{delay:?}");
    }
}

/// `scripts/platform-config.sh PLATFORM`'s output: what the release ships.
#[cfg(unix)]
fn platform_config(platform: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/platform-config.sh"))
        .arg(platform)
        .output()
        .expect("run scripts/platform-config.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(unix)]
fn windows_example() -> String {
    platform_config("windows")
}

/// Every key path of a TOML table (array elements as `[]`).
#[cfg(unix)]
fn keys(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                out.insert(path.clone());
                keys(&path, v, out);
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| keys(&format!("{prefix}[]"), v, out)),
        _ => {}
    }
}

#[cfg(unix)]
#[test]
fn the_windows_example_config_is_the_linux_one_with_its_files_where_install_ps1_puts_them() {
    let win = windows_example();
    let linux = read("config.example.toml");
    // Its journal and key file are relative to the config's folder, which is
    // install.ps1's $DataDir: the key file is the one install.ps1 writes.
    let cfg = Config::parse(&win, Path::new("/data/config.toml")).expect("the Windows example parses and validates");
    assert_eq!(cfg.journal.path, Path::new("/data/journal.sqlite3"));
    assert_eq!(cfg.api.api_key_file.as_deref(), Some(Path::new("/data/api-key")));
    let ps = read("packaging/windows/install.ps1");
    assert!(ps.contains(r#"$keyFile = Join-Path $DataDir "api-key""#));
    assert!(ps.contains(r#"$config = Join-Path $DataDir "config.toml""#));
    assert_eq!(cfg.watch.len(), 1);
    assert_eq!(cfg.watch[0].path, Path::new("/data").join(r"D:\Renders\Exports"), "a Windows path, kept verbatim");

    // The same settings as the Linux file: the keys (plus the key file) and
    // every value but the paths.
    let (w, l): (toml::Value, toml::Value) = (toml::from_str(&win).unwrap(), toml::from_str(&linux).unwrap());
    let (mut wk, mut lk) = (BTreeSet::new(), BTreeSet::new());
    keys("", &w, &mut wk);
    keys("", &l, &mut lk);
    lk.insert("api.api_key_file".into());
    assert_eq!(wk, lk);
    let strip = |mut v: toml::Value| {
        let t = v.as_table_mut().unwrap();
        t["api"].as_table_mut().unwrap().remove("api_key_file");
        t["journal"].as_table_mut().unwrap().remove("path");
        t["watch"].as_array_mut().unwrap()[0].as_table_mut().unwrap().remove("path");
        v
    };
    assert_eq!(strip(w), strip(l));
    // No Unix path is left, even in a comment's example.
    for line in win.lines() {
        assert!(!line.contains("\"/") && !line.contains("'/"), "a Unix path in the Windows example: {line}");
    }
}

#[cfg(unix)]
#[test]
fn the_macos_example_config_is_the_one_the_launchd_plist_runs() {
    let mac = platform_config("macos");
    let plist = read("packaging/launchd/com.spatialgen.sync.plist");
    let doc = roxmltree::Document::parse_with_options(
        &plist,
        roxmltree::ParsingOptions { allow_dtd: true, ..roxmltree::ParsingOptions::default() },
    )
    .expect("the plist is well-formed XML");
    let args: Vec<&str> = doc
        .descendants()
        .find(|n| n.has_tag_name("key") && n.text() == Some("ProgramArguments"))
        .and_then(|k| k.next_sibling_element())
        .expect("ProgramArguments")
        .children()
        .filter(|n| n.has_tag_name("string"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(args.len(), 4, "{args:?}");
    assert_eq!(&args[1..3], ["run", "--config"]);
    let config = args[3];
    assert!(mac.contains(&format!("# Validate with:  spatialgen-sync check --config {config}\n")), "{config}");
    assert!(read("packaging/launchd/INSTALL.txt").contains(config));
    let cfg = Config::parse(&mac, Path::new(config)).expect("the macOS example parses and validates");
    assert_eq!(cfg.journal.path, Path::new("/usr/local/var/spatialgen-sync/journal.sqlite3"));
    for line in mac.lines() {
        assert!(!line.contains("\"/etc/") && !line.contains("\"/var/"), "a Linux path in the macOS example: {line}");
    }
}

//! The launchd definition (`packaging/launchd/com.spatialgen.sync.plist`)
//! read as launchd reads it, and held to what the README's macOS section
//! tells an operator to do: the binary where the README puts it, `run
//! --config` with the config the README writes, log folders the README
//! creates (launchd does not create them), restarts after a crash but not
//! after a clean stop, and time enough to stop cleanly.
//!
//! The plist is parsed by a small reader of Apple's XML property list
//! format (the subset a launchd job uses: dict, array, key, string,
//! integer, true, false), strict enough to fail on anything else, rather
//! than a dependency for one file.

use std::path::Path;

const PLIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/launchd/com.spatialgen.sync.plist");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

#[derive(Debug, Clone, PartialEq)]
enum Value {
    String(String),
    Integer(i64),
    Bool(bool),
    Array(Vec<Value>),
    Dict(Vec<(String, Value)>),
}

impl Value {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> &str {
        match self.get(key) {
            Some(Value::String(s)) => s,
            other => panic!("{key}: expected a string, found {other:?}"),
        }
    }
    fn int(&self, key: &str) -> i64 {
        match self.get(key) {
            Some(Value::Integer(i)) => *i,
            other => panic!("{key}: expected an integer, found {other:?}"),
        }
    }
    fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            other => panic!("{key}: expected a boolean, found {other:?}"),
        }
    }
}

/// One XML token of a property list.
#[derive(Debug, PartialEq)]
enum Token {
    Open(String),
    Close(String),
    Empty(String),
    Text(String),
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn tokens(xml: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = xml;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").expect("a comment ends");
            rest = &after[end + 3..];
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest.find('>').expect("a declaration ends");
            rest = &rest[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').expect("a tag ends");
            let tag = &after[..end];
            rest = &after[end + 1..];
            let name = |t: &str| t.split_whitespace().next().expect("a tag name").to_string();
            if let Some(closing) = tag.strip_prefix('/') {
                out.push(Token::Close(name(closing)));
            } else if let Some(empty) = tag.strip_suffix('/') {
                out.push(Token::Empty(name(empty)));
            } else {
                out.push(Token::Open(name(tag)));
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            if !text.trim().is_empty() {
                out.push(Token::Text(unescape(text)));
            }
            rest = &rest[end..];
        }
    }
    out
}

/// The value starting at `tokens[*at]`.
fn value(tokens: &[Token], at: &mut usize) -> Value {
    let t = &tokens[*at];
    *at += 1;
    let text = |at: &mut usize, tag: &str| -> String {
        let s = match &tokens[*at] {
            Token::Text(s) => {
                *at += 1;
                s.clone()
            }
            _ => String::new(),
        };
        assert_eq!(tokens[*at], Token::Close(tag.into()), "<{tag}> closes");
        *at += 1;
        s
    };
    match t {
        Token::Empty(tag) if tag == "true" => Value::Bool(true),
        Token::Empty(tag) if tag == "false" => Value::Bool(false),
        Token::Empty(tag) if tag == "string" => Value::String(String::new()),
        Token::Empty(tag) if tag == "dict" => Value::Dict(Vec::new()),
        Token::Empty(tag) if tag == "array" => Value::Array(Vec::new()),
        Token::Open(tag) if tag == "string" => Value::String(text(at, "string")),
        Token::Open(tag) if tag == "integer" => Value::Integer(text(at, "integer").trim().parse().expect("an integer")),
        Token::Open(tag) if tag == "array" => {
            let mut items = Vec::new();
            while tokens[*at] != Token::Close("array".into()) {
                items.push(value(tokens, at));
            }
            *at += 1;
            Value::Array(items)
        }
        Token::Open(tag) if tag == "dict" => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            while tokens[*at] != Token::Close("dict".into()) {
                assert_eq!(tokens[*at], Token::Open("key".into()), "a dict holds <key> then a value");
                *at += 1;
                let key = text(at, "key");
                assert!(entries.iter().all(|(k, _)| *k != key), "key {key} twice");
                entries.push((key, value(tokens, at)));
            }
            *at += 1;
            Value::Dict(entries)
        }
        other => panic!("not a property list value: {other:?}"),
    }
}

fn parse(xml: &str) -> Value {
    let tokens = tokens(xml);
    assert_eq!(tokens.first(), Some(&Token::Open("plist".into())), "the document is a <plist>");
    let mut at = 1;
    let root = value(&tokens, &mut at);
    assert_eq!(tokens.get(at), Some(&Token::Close("plist".into())));
    assert_eq!(at + 1, tokens.len(), "nothing after </plist>");
    root
}

/// The README's macOS service section: from its heading to the next `###`/`##`.
fn readme_macos() -> String {
    let readme = std::fs::read_to_string(README).expect("README");
    let start = readme.find("### macOS (launchd)").expect("README has a `### macOS (launchd)` section");
    let body = &readme[start + 3..];
    let end = body.find("\n## ").into_iter().chain(body.find("\n### ")).min().unwrap_or(body.len());
    body[..end].to_string()
}

#[test]
fn the_reader_reads_what_launchd_reads_and_refuses_the_rest() {
    let v = parse(
        "<?xml version=\"1.0\"?><!DOCTYPE plist><!-- c --><plist version=\"1.0\"><dict><key>A</key>\
         <array><string>x &amp; y</string><integer>-3</integer><true/></array><key>B</key><dict/></dict></plist>",
    );
    assert_eq!(
        v,
        Value::Dict(vec![
            ("A".into(), Value::Array(vec![Value::String("x & y".into()), Value::Integer(-3), Value::Bool(true)])),
            ("B".into(), Value::Dict(Vec::new())),
        ])
    );
    let twice =
        std::panic::catch_unwind(|| parse("<plist><dict><key>A</key><true/><key>A</key><true/></dict></plist>"));
    assert!(twice.is_err(), "a key twice is refused");
}

#[test]
fn the_launchd_job_runs_the_binary_and_config_the_readme_installs() {
    let job = parse(&std::fs::read_to_string(PLIST).expect("plist"));
    let macos = readme_macos();
    assert_eq!(job.str("Label"), "com.spatialgen.sync");
    assert!(macos.contains("/Library/LaunchDaemons/com.spatialgen.sync.plist"), "README installs the plist");
    assert!(macos.contains("launchctl bootstrap system"), "README loads it");

    let Some(Value::Array(args)) = job.get("ProgramArguments") else { panic!("ProgramArguments is an array") };
    let args: Vec<&str> = args
        .iter()
        .map(|a| match a {
            Value::String(s) => s.as_str(),
            other => panic!("argument {other:?}"),
        })
        .collect();
    assert_eq!(args.len(), 4, "{args:?}");
    let (binary, config) = (args[0], args[3]);
    assert_eq!(&args[1..3], ["run", "--config"]);
    assert!(Path::new(binary).is_absolute() && binary.ends_with("/spatialgen-sync"), "{binary}");
    assert!(Path::new(config).is_absolute() && config.ends_with(".toml"), "{config}");
    assert!(
        macos.contains(&format!("sudo install -m 755 spatialgen-sync {binary}")),
        "README puts the binary at {binary}"
    );
    assert!(macos.contains(&format!("check --config {config}")), "README checks the config at {config}");

    // The service user the README creates, and the key file it names.
    assert_eq!(job.str("UserName"), "_spatialgen");
    assert!(macos.contains("dscl . -create /Users/_spatialgen"), "README creates the user");
    let config_dir = Path::new(config).parent().expect("config folder").display().to_string();
    assert!(
        macos.contains(&format!("api_key_file = \"{config_dir}/api-key\"")),
        "README's key file lives beside the config"
    );

    // launchd opens the log files but never creates their folder: the
    // README must, owned by the service user.
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let log = job.str(key);
        let dir = Path::new(log).parent().expect("log folder").display().to_string();
        assert!(macos.contains(&format!("sudo mkdir -p {dir}")), "README creates {dir} for {key}");
        assert!(
            macos.contains(&format!("_spatialgen {dir}")) || macos.contains(&format!("_spatialgen {dir} ")),
            "README gives {dir} to the service user"
        );
    }
}

#[test]
fn the_launchd_job_restarts_after_a_crash_not_after_a_clean_stop_and_has_time_to_stop() {
    let job = parse(&std::fs::read_to_string(PLIST).expect("plist"));
    assert!(job.bool("RunAtLoad"), "starts at boot");
    // KeepAlive { SuccessfulExit = false }: started again when it exits
    // non-zero or is killed, left stopped after exit 0 (SIGTERM handled:
    // `launchctl kill TERM`, `bootout`). A plain `KeepAlive = true` would
    // restart even a clean stop.
    let Some(keep_alive @ Value::Dict(_)) = job.get("KeepAlive") else { panic!("KeepAlive is a dictionary") };
    assert!(!keep_alive.bool("SuccessfulExit"));
    // Not faster than every 10 s (launchd's default, stated), so a bad
    // config (exit 2) does not spin.
    assert!(job.int("ThrottleInterval") >= 10);
    // launchd sends SIGTERM, then SIGKILL after ExitTimeOut: more than the
    // default shutdown_grace (10 s) for parts in flight, plus the journal's
    // last writes.
    assert!(job.int("ExitTimeOut") >= 20, "ExitTimeOut {}", job.int("ExitTimeOut"));
    // Files the agent creates (journal, staging, logs) are its user's only.
    assert_eq!(job.int("Umask"), 0o077);
}

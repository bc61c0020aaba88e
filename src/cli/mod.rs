//! The command-line edge: clap definitions, and one thin handler per command
//! (each in its own file below). Handlers return `anyhow::Result<Outcome>`;
//! [`main`] prints errors with their whole chain and maps them to exit codes:
//! 0 success, 1 the work failed, 2 bad usage or bad configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

mod check;
#[cfg(feature = "sandbox")]
mod demo;
mod docs;
mod forget;
mod plan;
mod run;
#[cfg(feature = "sandbox")]
pub mod sample;
#[cfg(feature = "sandbox")]
mod sandbox;
mod show;
mod status;
mod upload;

/// What a command ended with, as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: an upload failed, a group was (or would be) rejected.
    WorkFailed,
}

/// An error that means "bad usage": exit code 2 rather than 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "spatialgen-sync",
    version,
    about = "Upload finished spatial video exports from watch folders to SpatialGen"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE`, shared by every command that reads the config.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// The agent's TOML config file [default: /etc/spatialgen-sync/config.toml
    /// (macOS: /usr/local/etc/…, Windows: %ProgramData%\spatialgen-sync\…),
    /// else $XDG_CONFIG_HOME/spatialgen-sync/config.toml (Windows: %APPDATA%\…),
    /// whichever exists].
    #[arg(long, short = 'c', value_name = "FILE", env = "SPATIALGEN_SYNC_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The config named by `--config`, or found at the usual places.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let path = match &self.config {
            Some(p) => p.clone(),
            // Windows' per-user config folder is %APPDATA%, where XDG's is.
            None => crate::config::find_config(
                &crate::config::system_config(),
                std::env::var_os(if cfg!(windows) { "APPDATA" } else { "XDG_CONFIG_HOME" })
                    .as_deref()
                    .map(std::path::Path::new),
                std::env::var_os("HOME").as_deref().map(std::path::Path::new),
            )?,
        };
        Config::load(&path)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch, settle, group, upload, until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Validate the config and print the effective settings (key redacted).
    Check(CheckArgs),
    /// Dry run: the groups the agent would form, with roles, layout and rule violations.
    Plan(PlanArgs),
    /// Upload one folder as one group now, in the foreground.
    Upload(UploadArgs),
    /// What the journal holds: one row per group.
    Status(StatusArgs),
    /// One group with its files, parts and history.
    Show(ShowArgs),
    /// Cancel a group (local id, server session id, or folder path).
    Cancel(GroupArgs),
    /// Re-queue a failed, canceled or expired group as a fresh upload.
    Retry(GroupArgs),
    /// Drop ended groups older than a duration from the journal.
    Forget(ForgetArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Manpage,
    /// Hold the queue: no new group or part starts (parts in flight finish); survives restarts.
    Pause(PauseArgs),
    /// Release the queue held by `pause`.
    Resume(PauseArgs),
    /// Run the local SpatialGen-compatible server.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// The whole flow on this machine, no account needed.
    #[cfg(feature = "sandbox")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Plan this folder instead of the configured watch folders.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Layout (2D, MVHEVC, SBS, TB, Separate, AIV); default: inferred.
    #[arg(long)]
    pub layout: Option<String>,
    /// Perspective (Regular, 180, 360).
    #[arg(long)]
    pub perspective: Option<String>,
    /// Video name; default: the folder's name.
    #[arg(long)]
    pub name: Option<String>,
    /// The export folder to upload.
    pub folder: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON array (every group, unless `--state`, `--limit`,
    /// `--since` or `--node` narrow it) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The table lists every group, not only those at work, those needing
    /// attention and the newest 20 ended ones.
    #[arg(long)]
    pub all: bool,
    /// Only groups in this state (repeat or separate with commas:
    /// `--state queued,uploading`).
    #[arg(long, value_name = "S", value_delimiter = ',')]
    pub state: Vec<crate::journal::GroupState>,
    /// Only the newest N groups (after `--state`).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only groups changed since then: a duration back from now (`24h`,
    /// `7d`) or a time (`2026-12-01T00:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = status::parse_since)]
    pub since: Option<i64>,
    /// In a fleet: only the groups this node holds or ended.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Local id, server session id, or folder path.
    pub group: String,
}

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Local id, server session id, or folder path.
    pub group: String,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Groups that ended longer ago than this (`30d`, `12h`, `90m`).
    #[arg(long, value_name = "DURATION")]
    pub older_than: crate::config::Dur,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Where stored objects and state go (default: a temporary folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// API key the sandbox accepts (default: any non-empty key).
    #[arg(long, env = "SPATIALGEN_SANDBOX_KEY")]
    pub key: Option<String>,
    /// Part size the sandbox chooses, in bytes (default 100 MiB).
    #[arg(long)]
    pub part_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary folder afterwards and print where it is.
    #[arg(long)]
    pub keep: bool,
}

/// Parse the arguments, run the command, print any error, return the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::WorkFailed) => ExitCode::from(1),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Check(a) => check::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Upload(a) => upload::run(a),
        Command::Status(a) => status::status(a),
        Command::Show(a) => show::run(a),
        Command::Cancel(a) => status::cancel(a),
        Command::Retry(a) => status::retry(a),
        Command::Forget(a) => forget::run(a),
        Command::Completions(a) => docs::completions(a),
        Command::Manpage => docs::manpage(),
        Command::Pause(a) => status::pause(a),
        Command::Resume(a) => status::resume(a),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(a) => sandbox::run(a),
        #[cfg(feature = "sandbox")]
        Command::Demo(a) => demo::run(a),
    }
}

/// 2 for configuration and usage errors, 1 for everything else.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    let usage = e.chain().any(|c| c.is::<ConfigError>() || c.is::<UsageError>());
    if usage { 2 } else { 1 }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// A multi-threaded tokio runtime for commands that need one.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Log lines to stderr at the config's level, unless logging is already set
/// up (by `main`, or a test harness).
fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPATIALGEN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The group `spec` names (a local id, a server session id or the export's
/// path); an unknown one is a usage error naming it.
fn find_group(journal: &dyn crate::journal::Store, spec: &str) -> anyhow::Result<crate::journal::GroupId> {
    journal.find(spec)?.ok_or_else(|| {
        UsageError(format!("no group {spec:?} in the journal (give a local id, a session id or the export's path)"))
            .into()
    })
}

/// Is there a journal to read? A fleet's database always is; a SQLite file
/// only once an agent or an upload has made it.
fn journal_exists(cfg: &crate::config::Config) -> bool {
    cfg.journal.url.is_some() || cfg.journal.path.exists()
}

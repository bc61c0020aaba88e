//! spatialgen-sync: a background agent that uploads finished spatial video
//! exports from watched folders to SpatialGen through its Direct Upload API.
//!
//! The pipeline runs left to right and each stage hands the next a plain value:
//! [`watch`] notices changes and decides when an export is *finished*
//! (settled); [`group`] turns a finished export into an [`group::UploadGroup`]
//! (roles, languages, layout, the API's rules) or a rejection, looking
//! inside every video and audio container with [`media`] (the probe: is the
//! render whole, and what is it — MV-HEVC stereo, packing, projection)
//! before the layout is decided; [`journal`]
//! records the group, the only shared state, behind one boundary (the traits
//! of [`journal::Store`], implemented on SQLite; async code crosses
//! [`journal::AsyncJournal::call`]); [`upload`] claims
//! queued groups from the journal and moves their bytes through [`api`], the
//! typed SpatialGen client, recording every fact before the network step that
//! depends on it. `sandbox` (the default-on `sandbox` feature) is a local
//! server with the same contract (and fault injection) for the demo, the
//! tests and offline trials. [`config`]
//! reads the one TOML file; [`model`] holds the vocabulary all stages share;
//! [`ops`] holds the operator controls the engine and the agent plug in
//! (upload windows, the bandwidth limit, hooks, metrics, reload, and the
//! console: the HTTP control API and web page);
//! [`logging`] sets up tracing. [`agent`] is the running service that
//! starts, supervises, reloads and stops all of these in one process, with
//! one journal handle; [`cli`] is the command-line edge, one thin handler
//! per command. [`retry`] is the one retry policy (backoff, `Retry-After`,
//! cancellation, repeat safety) of every outgoing request.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod group;
pub mod journal;
pub mod logging;
pub mod media;
pub mod model;
pub mod ops;
pub mod owner_only;
pub mod retry;
// The unit tests use the sandbox (and its test PostgreSQL) with or without
// the feature, so that `--no-default-features --all-targets` builds.
#[cfg(any(test, feature = "sandbox"))]
pub mod sandbox;
// Descriptor starvation (RLIMIT_NOFILE) is a Linux test's tool.
#[cfg(all(test, target_os = "linux"))]
mod starved;
pub mod upload;
pub mod watch;

//! The upload engine: claims work from the journal and moves each group's
//! bytes to SpatialGen, under concurrency limits, surviving crashes.
//!
//! # Shape
//! One scheduler ([`Engine::run`]) re-reads the journal every `poll`
//! interval: it handles control requests (cancel), re-queues failed groups
//! whose automatic retry is due, and starts up to `max_groups` group workers.
//! A worker creates the server group, then runs one task per file; a file
//! task asks part URLs in batches of `part_url_batch`, takes a permit from
//! the engine-wide semaphore of `max_parts_in_flight` *before* it touches a
//! part's bytes, and spawns the PUT ([`stream`]) holding that permit; the
//! PUT task records the part's ETag the moment it succeeds. When every part
//! of a file is done the file is completed; the last file's answer carries
//! the library id; then the after-upload step runs ([`finish`]).
//!
//! # Invariants
//! - Nothing goes over the network that depends on a fact not yet in the
//!   journal: the session and upload ids are recorded before any part URL
//!   is asked for; a part is recorded done (with its ETag) before `complete`
//!   is sent; the library id is recorded before the after-upload step.
//! - Every network step is safe to repeat: part URLs are asked again, a part
//!   PUT replaces the same part, `complete` on a completed file answers the
//!   same, DELETE of a canceled group is a no-op.
//! - One engine per journal ([`crate::journal::EngineLock`]).
//! - A worker writes only under its claim's fencing token
//!   ([`crate::journal::Fence`]); a refused write stops the worker quietly
//!   (a log line and a history line), never the engine. A worker whose
//!   claim went unconfirmed for nine tenths of the lease (on a clock that runs
//!   while the process is stopped: `lease.rs`) sends nothing more until it
//!   has renewed the claim. A worker's journal error that is not the
//!   database out of reach ends that worker, not the engine.
//! - Memory is bounded: at most `max_parts_in_flight` parts are read at once,
//!   each through the bounded stream of [`stream`].
//! - Outside every upload window ([`EngineOptions::gate`] reads `false`) no
//!   group is claimed, no server group is created and no part starts; parts
//!   already in flight finish and are recorded. A worker looks at the gate
//!   both before and after it waits for a part permit, so a permit freed just
//!   after the window closed starts nothing.
//! - A reloaded config ([`EngineOptions::config`]) changes only what starts
//!   afterwards: the next claim (`max_groups`), the next permit
//!   (`max_parts_in_flight`: grown at once, shrunk as parts end), the next
//!   request's retry policy, the next after-upload step. The API client and
//!   the journal stay as the engine was built.
//! - The key never leaves [`crate::api`]; URLs are logged without their query.
//!
//! # Recovery
//! On start the engine finishes the housekeeping of ended groups (after a
//! crash between "completed" and "moved"), then resumes `uploading` groups
//! before `queued` ones: parts recorded done are skipped, pending parts get
//! fresh URLs, files whose `complete` answer was lost are completed again.
//! A session the server no longer knows (404), or older than the API's 5
//! days, makes the group `expired`, re-queued as a new group if its files are
//! unchanged. A source file that changed or vanished cancels the server group
//! (DELETE) and the group becomes `canceled` with the reason; the watcher
//! settles the export again as a new group. A crash between the server
//! creating a group and the journal recording it leaves an orphan server
//! group that never completes and expires by itself: the API has no way to
//! find it again, and it never becomes a library entry.
//!
//! # Stopping
//! Shutdown is two-phase: first no new step starts (no new part, no new API
//! call) and parts in flight may finish and be recorded for up to
//! `shutdown_grace`; then in-flight PUTs are dropped, which closes their
//! connections (the storage discards a partial part; the part stays pending).
//! A cancel request drops the group's in-flight PUTs at once, sends DELETE
//! and marks the group `canceled`.
//!
//! # Files
//! - `engine.rs`: the scheduler ([`Engine`]), its options and [`Observer`].
//! - `worker.rs`: one group's upload, from its server group to its end.
//! - `parts.rs`: one file's parts: URLs in batches, permits, PUTs, ETags.
//! - [`stream`]: one part streamed from disk, with MD5 and the chunk gate.
//! - [`control`]: cancel and retry, for every front end, and the engine's
//!   handling of the requests they write.
//! - `lease.rs`: a claim's lease as the worker sees it, on a clock that
//!   runs while the process is stopped.
//! - `housekeeping.rs`: the after-upload step and the staged files of ended
//!   groups, on the blocking pool.
//! - [`finish`]: the after-upload actions and the checks that a group's
//!   files are what was grouped.

pub mod control;
mod engine;
pub mod finish;
mod housekeeping;
#[cfg(test)]
mod housekeeping_tests;
mod lease;
#[cfg(all(test, target_os = "linux"))]
mod mount_tests;
mod parts;
mod service;
#[cfg(test)]
mod stall_tests;
pub mod stream;
mod worker;

pub use control::{CancelEnd, cancel_now};
pub use engine::{Engine, EngineOptions, Observer};
pub use service::run_engine;

use crate::api::ApiError;
use crate::journal::{GroupId, JournalError};

/// Why the engine as a whole stopped with an error (a group's own failure is
/// recorded in the journal and is not an engine error).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The client could not be built (bad endpoint, unusable key).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The config cannot give what the step needs (the API key).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// 401/403 from the API while driving one group in the foreground.
    #[error("the API key was refused ({0}); check api_key_env / api_key_file and the key's role (admin or upload)")]
    AuthRefused(String),
}

/// How one group's work ended, as the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutcome {
    /// In the library.
    Completed { library_id: u64 },
    /// Recorded `failed` with this error; retried later.
    Failed(String),
    /// Recorded `canceled` with this reason.
    Canceled(String),
    /// Recorded `expired`; `requeued` is the new group uploading the same files.
    Expired { requeued: Option<GroupId> },
    /// The API refused the key; the group's state is unchanged.
    AuthRefused(String),
    /// Shutdown (or the group is no longer workable); resumable as it stands.
    Stopped,
}

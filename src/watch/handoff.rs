//! The hand-off: what happens to a settle value. The watcher only decides
//! *when*; a [`Handoff`] decides what that means for the rest of the agent
//! (build the group, write the journal).

use std::sync::mpsc::Sender;
use std::time::Instant;

use super::WatchError;
use super::scan::WatchRules;
use super::settle::Settle;

/// Receives every settle value, in order, on the watcher's thread.
pub trait Handoff: Send {
    /// An error on `Settled` or `Unreadable` makes the export settle again
    /// later, so a transient failure (a busy journal) is retried; an error on
    /// any other value is logged.
    fn hand_off(&mut self, settle: &Settle, rules: &WatchRules) -> Result<(), WatchError>;
}

/// Sends every settle value, stamped with the moment it was handed off, into
/// a channel: for tests and benchmarks that assert on what the watcher decided.
#[derive(Debug, Clone)]
pub struct ChannelHandoff(pub Sender<(Instant, Settle)>);

impl Handoff for ChannelHandoff {
    fn hand_off(&mut self, settle: &Settle, _rules: &WatchRules) -> Result<(), WatchError> {
        self.0.send((Instant::now(), settle.clone())).map_err(|_| WatchError::Handoff("receiver is gone".into()))
    }
}

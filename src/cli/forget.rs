//! `spatialgen-sync forget --older-than 30d`: drop groups that ended longer
//! ago than that from the journal, with their files, parts and history, and
//! say how many.
//!
//! Which groups: see [`crate::journal::Queue::forgettable`] (ended, never
//! `waiting`, `queued`, `uploading` or `failed`). One more rule keeps
//! "never upload twice": a group whose export is still where it was (any of
//! its files still at its path) is kept, because its row is what tells the
//! watcher that export was already uploaded (or rejected, or canceled by
//! the user); forgotten, the next scan would upload it (or report it)
//! again. With `after_upload = "delete"` or `"move"` uploaded exports are
//! gone and their groups can be forgotten; with `"keep"` they stay until
//! their export is removed. A group whose watch folder is not here (an
//! unmounted share) is kept too: missing files there prove nothing. The
//! running agent applies the same rules with `[journal] forget_after`
//! ([`crate::agent::retention`]). Safe while the agent runs: the drop is one
//! journal transaction, and an ended group is nothing the engine works on.

use anyhow::Context;

use super::{ForgetArgs, Outcome};
use crate::agent::retention::exports_gone;
use crate::journal::{format_ms, now_ms};

pub fn run(args: ForgetArgs) -> anyhow::Result<Outcome> {
    let cfg = args.config.load()?;
    super::init_logging(&cfg);
    let journal = crate::journal::open_configured(&cfg)?;
    let age = i64::try_from(args.older_than.0.as_millis()).unwrap_or(i64::MAX);
    let before = now_ms().saturating_sub(age);
    let candidates = journal.forgettable(before)?;
    let (drop, kept) = exports_gone(journal.as_ref(), &candidates).context("reading the ended groups")?;
    let n = journal.forget(&drop, before)?;
    let since = format_ms(before);
    println!("forgot {n} group(s) that ended before {since} ({})", crate::config::Dur(args.older_than.0));
    if kept > 0 {
        println!(
            "kept {kept} ended group(s) whose export is still in place (or whose watch folder is not here to \
             look): forgotten, the watcher would upload (or report) it again; remove the export first"
        );
    }
    Ok(Outcome::Success)
}

//! The PostgreSQL journal: one database shared by a fleet of agents, with
//! the same schema versions, transitions and invariants as the SQLite file
//! (see the journal's module doc), and what a fleet adds:
//!
//! - **One group per export across nodes.** A path under a watch folder is
//!   stored by the folder's fleet-wide name (`paths.rs`), so the key of an
//!   export is the same on every node that sees it, and its pending row is
//!   unique. Every write of the watcher and of an operator that moves a
//!   group or writes its history takes one advisory lock first (`write`), so
//!   those writes run one at a time across the fleet, as SQLite's
//!   `IMMEDIATE` transactions do on one machine: two nodes enqueueing the
//!   same export at once make one group, two nodes re-queueing the same
//!   failed group move it once.
//! - **Claims with leases.** [`Queue::next_group`](crate::journal::Queue::next_group)
//!   claims a group with `FOR UPDATE SKIP LOCKED`, setting `node` and
//!   `lease_until` (by the database's clock); the engine renews its claims
//!   every third of the lease ([`Store::renew_claims`]). A node silent past
//!   its lease loses them, and the next node to ask takes the group over,
//!   resuming the same server session from the recorded parts. Each claim or
//!   takeover stores a larger fencing token (`groups.claim`); a worker's
//!   writes are checked against it under a lock on the group's row, so a
//!   node that wakes after a takeover writes nothing
//!   ([`crate::journal::Fence`]). Only a node that has the group's watch
//!   folder (or that found the export, for staged files and one-off
//!   uploads) claims it.
//! - **History in commit order.** A history line takes the same lock in the
//!   statement that inserts it, and it is held until the commit, so event
//!   ids commit in increasing order and a reader tailing by id misses none.
//!   A worker's moves under its claim (`write_for`) and notes take it only
//!   there, as their last statement: the claim and the group's row lock keep
//!   other writers off the group, so the fleet-wide lock is held for one
//!   statement and the commit. The hot path (a part recorded, a file
//!   completed), claims and renewals do not take it at all.
//! - **Per node:** pauses (a refused key, an unmounted share), the engine
//!   and agent locks (session advisory locks on a connection of their own),
//!   the notifications and after-upload steps (for groups the node completed).
//! - **Losing the database.** A call that cannot reach the database fails
//!   with [`JournalError::Unavailable`]; the connection is dropped and the
//!   next call connects again. A database that stalls counts as lost: every
//!   statement, lock wait, connection attempt and async call times out
//!   after half the lease (`db_timeout`), and calls run on a small pool of
//!   connections, so one stuck on a stopped backend holds only its own.
//!
//! Calls block (the `postgres` client runs its own small runtime): async
//! code reaches them through [`crate::journal::AsyncJournal`], as with SQLite.

mod history;
mod paths;
mod queue;
#[cfg(test)]
pub(in crate::journal) use queue::SUMMARY_SQL;
mod requests;
mod schema;
mod tls;
mod transfer;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::FromSql;
use postgres::{Client, IsolationLevel, Row, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use paths::Mounts;

use super::store::Store;
use super::{AgentLock, Claim, EngineLock, Fence, GroupId, JournalError, NodeInfo};
use crate::config::DatabaseUrl;

/// What a PostgreSQL journal needs to open.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: DatabaseUrl,
    /// From `PGPASSWORD` or `password_file`, when the URL has none.
    pub password: Option<String>,
    /// This agent's name in the fleet.
    pub node: String,
    pub lease: Duration,
    pub mounts: Mounts,
}

/// The milliseconds-since-the-epoch of the database's clock, in SQL: leases
/// are measured by one clock, whatever the nodes' clocks say.
const DB_NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// [`Store::nodes`]: one clock reading for every row; the held groups
/// come by the `groups_state` index (few rows are `uploading`), joined to
/// the handful of `nodes` rows.
fn nodes_sql() -> String {
    format!(
        "WITH now AS (SELECT {DB_NOW} AS ms)
         SELECT n.node, n.seen_at, n.lease_ms, n.version, n.seen_at + n.lease_ms < now.ms AS silent,
                count(g.id) AS held
         FROM nodes n CROSS JOIN now
         LEFT JOIN groups g ON g.state = 'uploading' AND g.node = n.node AND g.lease_until > now.ms
         GROUP BY n.node, n.seen_at, n.lease_ms, n.version, now.ms
         ORDER BY n.node"
    )
}

/// The advisory lock every write that moves a group or writes history takes (see the module doc).
const EVENT_LOCK: i64 = 0x5347_5359_4e43_0002;

/// How many times a write is tried when the database reports a conflict.
const WRITE_ATTEMPTS: u32 = 30;

/// Idle connections kept for the next calls (more are opened while calls
/// overlap, and closed after).
const IDLE_CONNECTIONS: usize = 4;

/// How long one statement, a wait for a lock, a connection attempt or a call
/// may take before the database counts as out of reach: half the lease
/// (between 1 s and 30 s), so that a stalled server is noticed, and this
/// node stops claiming and recording, before its claims could lapse.
pub(super) fn db_timeout(lease: Duration) -> Duration {
    (lease / 2).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgJournal {
    /// Connections not in use. A call takes one (or opens one) and gives it
    /// back after, so a call stuck on a stalled server holds only its own.
    idle: Mutex<Vec<Client>>,
    /// See [`db_timeout`].
    timeout: Duration,
    config: postgres::Config,
    tls: MakeRustlsConnect,
    node: String,
    lease: Duration,
    mounts: Mounts,
    /// The URL without its password, for logs and errors.
    shown: String,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal").field("url", &self.shown).field("node", &self.node).finish()
    }
}

/// Map a driver error: the database out of reach (connection refused or
/// lost, the server shutting down) is [`JournalError::Unavailable`]; a
/// serialization failure is [`JournalError::Busy`] (the write is repeated);
/// anything else is the database's own answer.
pub(super) fn db_err(e: postgres::Error) -> JournalError {
    let said = describe(&e);
    if let Some(code) = e.code() {
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            return JournalError::Busy(said);
        }
        // The statement timeout: the server is alive but does not get through.
        if *code == SqlState::QUERY_CANCELED || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT {
            return JournalError::Unavailable(said);
        }
        let class = code.code().get(..2).unwrap_or("");
        if class == "08"
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            return JournalError::Unavailable(said);
        }
        return JournalError::Database(said.into());
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    if e.is_closed() || io || said.starts_with("error connecting") || said.contains("timed out") {
        return JournalError::Unavailable(said);
    }
    JournalError::Database(said.into())
}

/// The driver's error in the server's words (severity, message, SQLSTATE,
/// detail), or with its cause for an error of the connection.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        return s;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A column of a row, by name, as `T` (a mismatch is an error, not a panic).
pub(super) fn col<'a, T: FromSql<'a>>(r: &'a Row, name: &str) -> Result<T, JournalError> {
    r.try_get(name).map_err(db_err)
}

/// Run `f` in one transaction at `level` on `c`.
pub(super) fn with_tx<T>(
    c: &mut Client,
    level: IsolationLevel,
    f: impl FnOnce(&mut Transaction<'_>) -> Result<T, JournalError>,
) -> Result<T, JournalError> {
    let mut tx = c.build_transaction().isolation_level(level).start().map_err(db_err)?;
    let out = f(&mut tx)?;
    tx.commit().map_err(db_err)?;
    Ok(out)
}

/// Take the history lock for the rest of the transaction (see the module doc).
pub(super) fn lock_history(tx: &mut Transaction<'_>) -> Result<(), JournalError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOCK]).map_err(db_err)?;
    Ok(())
}

impl PgJournal {
    /// Connect, migrate (under the migration lock) and register this node.
    pub fn open(opts: PgOptions) -> Result<PgJournal, JournalError> {
        let j = PgJournal::connect_only(opts)?;
        j.with(|c| schema::migrate(c, &j.shown))?;
        Ok(j)
    }

    /// Connect and check the schema without changing anything (`status`,
    /// `show`, `check`): a database at another version is refused with what to do.
    pub fn open_read_only(opts: PgOptions) -> Result<PgJournal, JournalError> {
        let j = PgJournal::connect_only(opts)?;
        let found = j.with(schema::version)?;
        if found > schema::LATEST {
            return Err(JournalError::TooNew { path: j.shown.clone().into(), found, supported: schema::LATEST });
        }
        if found < schema::LATEST {
            return Err(JournalError::Refused(format!(
                "journal {} has schema version {found} and this binary reads version {}; it is created or \
                 upgraded when an agent (`spatialgen-sync run`) next starts",
                j.shown,
                schema::LATEST
            )));
        }
        Ok(j)
    }

    fn connect_only(opts: PgOptions) -> Result<PgJournal, JournalError> {
        let shown = opts.url.redacted();
        let target = opts.url.vet().map_err(|e| JournalError::Invalid(format!("journal.url: {e}")))?;
        let (tls, mode) = tls::connector(&target.sslmode, target.sslrootcert.as_deref())
            .map_err(|e| JournalError::Invalid(format!("journal.url: {e}")))?;
        let mut config: postgres::Config = strip_ssl_params(opts.url.expose())
            .parse()
            .map_err(|e: postgres::Error| JournalError::Invalid(format!("journal.url: {e}")))?;
        config.ssl_mode(mode);
        if let Some(p) = &opts.password {
            config.password(p);
        }
        let timeout = db_timeout(opts.lease);
        // A server that stops answering is noticed within the timeout: on
        // connect, on unacknowledged data (a network cut), and by TCP
        // keepalive on an idle connection.
        config
            .application_name(&format!("spatialgen-sync {}", opts.node))
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            .keepalives_idle((timeout / 2).max(Duration::from_secs(1)))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        let j = PgJournal {
            idle: Mutex::new(Vec::new()),
            timeout,
            config,
            tls,
            node: opts.node,
            lease: opts.lease,
            mounts: opts.mounts,
            shown,
        };
        j.with(|_| Ok(()))?;
        Ok(j)
    }

    fn new_client(&self) -> Result<Client, JournalError> {
        let mut c = self.config.connect(self.tls.clone()).map_err(db_err)?;
        // A hung statement (a lock held by a stuck node) ends instead of
        // stalling the engine; a claim never waits (SKIP LOCKED). A node
        // stopped in the middle of a transaction (SIGSTOP, a VM paused) loses
        // it, and the locks it held, after the same time.
        let ms = self.timeout.as_millis();
        c.batch_execute(&format!(
            "SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET idle_in_transaction_session_timeout = {ms}"
        ))
        .map_err(db_err)?;
        Ok(c)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the connection, connecting first if there is none; a
    /// connection that turns out lost is dropped, so the next call reconnects.
    pub(super) fn with<T: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        off_runtime(|| self.with_here(f))
    }

    fn with_here<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, JournalError>) -> Result<T, JournalError> {
        let reused = std::iter::from_fn(|| self.idle().pop()).find(|c| !c.is_closed());
        let mut client = match reused {
            Some(c) => c,
            None => self.new_client()?,
        };
        let out = f(&mut client);
        let lost = matches!(out, Err(JournalError::Unavailable(_))) || client.is_closed();
        let mut idle = self.idle();
        if !lost && idle.len() < IDLE_CONNECTIONS {
            idle.push(client);
        } else {
            drop(idle);
            drop_client(client);
        }
        out
    }

    /// One write transaction that moves a group or writes its history:
    /// it takes the history lock first, so such transactions run one at a
    /// time across the fleet (as SQLite's `IMMEDIATE` ones do on one
    /// machine) and every statement sees the writes committed before it.
    /// Repeated, after a short random wait, if the database still reports a
    /// conflict (a deadlock with a claim, a unique key taken meanwhile).
    pub(super) fn write<T: Send>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        self.write_locking(true, f)
    }

    /// A write under a claim (`fence`: see [`crate::journal::Fence`]): the
    /// claim, not the fleet-wide lock, keeps other writers off the group (its
    /// row is locked by the fence check and the move), so the history lock
    /// is taken only by the history line, the transaction's last statement,
    /// and held just until the commit. An unclaimed write (an operator's
    /// act) takes it first, as every other move does.
    pub(super) fn write_for<T: Send>(
        &self,
        fence: Fence,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        self.write_locking(fence == Fence::Unclaimed, f)
    }

    /// A write that adds history lines without moving a group: the history
    /// lock is taken by the first line, held until the commit.
    pub(super) fn write_lines<T: Send>(
        &self,
        f: impl FnMut(&mut Transaction<'_>) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        self.write_locking(false, f)
    }

    fn write_locking<T: Send>(
        &self,
        lock_first: bool,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        let mut attempt = 0;
        loop {
            let run = |tx: &mut Transaction<'_>| {
                if lock_first {
                    lock_history(tx)?;
                }
                f(tx)
            };
            match self.with(|c| with_tx(c, IsolationLevel::ReadCommitted, run)) {
                Err(JournalError::Busy(why)) if attempt + 1 < WRITE_ATTEMPTS => {
                    attempt += 1;
                    tracing::trace!(attempt, %why, "journal write conflicted with another node's; repeating it");
                    let ms = rand::random_range(1..=(5u64 << attempt.min(6)));
                    std::thread::sleep(Duration::from_millis(ms));
                }
                other => return other,
            }
        }
    }

    /// One statement or a few that need no isolation beyond READ COMMITTED
    /// (a claim with SKIP LOCKED, a part recorded, reads).
    pub(super) fn write_rc<T: Send>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, JournalError> + Send,
    ) -> Result<T, JournalError> {
        self.with(|c| with_tx(c, IsolationLevel::ReadCommitted, f))
    }

    pub(super) fn node_name(&self) -> &str {
        &self.node
    }

    pub(super) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    pub(super) fn mounts(&self) -> &Mounts {
        &self.mounts
    }

    /// An export's key or root as stored: its fleet-wide spelling, with the
    /// NFC and NFD spellings folded where the platform's filesystem folds
    /// them (macOS; see [`crate::model::names`]), as the SQLite journal does.
    pub(super) fn key_code(&self, p: &Path) -> Vec<u8> {
        crate::model::names::identity_bytes(self.mounts.encode(p), crate::model::names::FOLDS_NORMALIZATION)
    }

    /// A session advisory lock on a connection of its own, held as long as
    /// the returned guard lives (and released by the server if this
    /// process dies): `None` if another session holds it.
    fn session_lock(&self, what: &str) -> Result<Option<SessionLock>, JournalError> {
        let key = lock_key(&format!("{what}:{}", self.node));
        let mut c = off_runtime(|| self.new_client())?;
        let got: bool =
            c.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).and_then(|r| r.try_get(0)).map_err(db_err)?;
        Ok(got.then(|| SessionLock {
            client: Mutex::new(Some(c)),
            what: format!("{what} lock of node {} on {}", self.node, self.shown),
        }))
    }

    /// Record this node as alive (its engine's heartbeat).
    fn heartbeat(&self, c: &mut Client) -> Result<(), JournalError> {
        c.execute(
            &format!(
                "INSERT INTO nodes (node, seen_at, lease_ms, version) VALUES ($1, {DB_NOW}, $2, $3)
                 ON CONFLICT (node) DO UPDATE SET seen_at = excluded.seen_at, lease_ms = excluded.lease_ms,
                                                  version = excluded.version"
            ),
            &[&self.node, &self.lease_ms(), &env!("CARGO_PKG_VERSION")],
        )
        .map_err(db_err)?;
        Ok(())
    }
}

/// Run `f` where it may block: the `postgres` client blocks on a runtime
/// of its own, which cannot start on a thread that drives one. The agent's
/// calls cross [`crate::journal::AsyncJournal::call`] onto the blocking pool
/// and run in place; a caller on a runtime thread (or on the blocking pool
/// without that marker) gets a thread of its own for the call.
fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T, JournalError> + Send) -> Result<T, JournalError> {
    if super::store::may_block_here() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join())
        .unwrap_or_else(|_| Err(JournalError::Task("a journal call panicked".into())))
}

/// The URL without `sslmode` and `sslrootcert`, which this module applies
/// itself (the driver knows fewer modes than libpq).
fn strip_ssl_params(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else { return url.to_string() };
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "sslmode" && k != "sslrootcert")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    u.to_string()
}

/// A stable 64-bit advisory lock key for `name`.
fn lock_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("spatialgen-sync {name}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    i64::from_be_bytes(b)
}

/// A held session advisory lock: its connection.
struct SessionLock {
    client: Mutex<Option<Client>>,
    what: String,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        if let Some(c) = self.client.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            drop_client(c);
        }
    }
}

impl Drop for PgJournal {
    fn drop(&mut self) {
        for c in self.idle.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            drop_client(c);
        }
    }
}

/// Close a connection where that may block (its runtime shuts down): in
/// place off the async runtime, else on a thread of its own.
fn drop_client(c: Client) {
    if super::store::may_block_here() {
        drop(c);
    } else {
        std::thread::spawn(move || drop(c));
    }
}

impl std::fmt::Debug for SessionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl Store for PgJournal {
    fn describe(&self) -> String {
        format!("{} (node {})", self.shown, self.node)
    }

    fn schema_version(&self) -> Result<i64, JournalError> {
        self.with(schema::version)
    }

    fn try_lock_engine(&self) -> Result<Option<EngineLock>, JournalError> {
        let lock = self.session_lock("engine")?;
        if lock.is_some() {
            self.with(|c| self.heartbeat(c))?;
        }
        Ok(lock.map(|l| EngineLock::held(Box::new(l))))
    }

    fn engine_running(&self) -> Result<bool, JournalError> {
        self.with(|c| {
            c.query_one(&format!("SELECT EXISTS (SELECT 1 FROM nodes WHERE seen_at + lease_ms > {DB_NOW})"), &[])
                .and_then(|r| r.try_get(0))
                .map_err(db_err)
        })
    }

    fn try_lock_agent(&self) -> Result<Option<AgentLock>, JournalError> {
        Ok(self.session_lock("agent")?.map(|l| AgentLock::held(Box::new(l))))
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn generation(&self) -> Result<Option<u128>, JournalError> {
        // Where the server's write-ahead log ends: it moves with every
        // commit that wrote anything (in any database of the server, so it
        // moves more often than needed, never less).
        let at: i64 = self.with(|c| {
            c.query_one("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint", &[])
                .map_err(db_err)
                .map(|r| r.get(0))
        })?;
        Ok(Some(u128::from(at as u64)))
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.lease)
    }

    fn call_timeout(&self) -> Option<Duration> {
        // The server's own timeouts answer first when it is alive; this one
        // is for a server that does not answer at all.
        Some(self.timeout + Duration::from_millis(500))
    }

    fn renew_claims(&self, claims: &[Claim]) -> Result<Vec<GroupId>, JournalError> {
        let (ids, tokens): (Vec<GroupId>, Vec<i64>) = claims.iter().map(|c| (c.id, c.token)).unzip();
        self.with(|c| {
            self.heartbeat(c)?;
            let held: Vec<GroupId> = c
                .query(
                    &format!(
                        "UPDATE groups g SET lease_until = CASE WHEN g.state IN ('queued','uploading')
                                                                THEN {DB_NOW} + $4 ELSE NULL END
                         FROM unnest($1::bigint[], $2::bigint[]) AS mine(id, token)
                         WHERE g.id = mine.id AND g.claim = mine.token AND g.node = $3 RETURNING g.id"
                    ),
                    &[&ids, &tokens, &self.node, &self.lease_ms()],
                )
                .map_err(db_err)?
                .iter()
                .map(|r| col(r, "id"))
                .collect::<Result<_, _>>()?;
            Ok(ids.iter().copied().filter(|id| !held.contains(id)).collect())
        })
    }

    fn nodes(&self) -> Result<Vec<NodeInfo>, JournalError> {
        let rows = self.with(|c| c.query(&nodes_sql(), &[]).map_err(db_err))?;
        rows.iter()
            .map(|r| {
                Ok(NodeInfo {
                    name: col(r, "node")?,
                    last_seen_ms: col(r, "seen_at")?,
                    held: u64::try_from(col::<i64>(r, "held")?).unwrap_or(0),
                    version: col(r, "version")?,
                    lease_ms: col(r, "lease_ms")?,
                    silent: col(r, "silent")?,
                })
            })
            .collect()
    }

    #[cfg(test)]
    fn test_sql(&self, sql: &str) -> Result<Option<i64>, JournalError> {
        self.with(|c| {
            let rows = c.query(sql, &[]).map_err(db_err)?;
            match rows.first() {
                Some(r) => r.try_get::<_, Option<i64>>(0).map_err(db_err),
                None => Ok(None),
            }
        })
    }

    fn release_claims(&self, claims: &[Claim]) -> Result<(), JournalError> {
        let (ids, tokens): (Vec<GroupId>, Vec<i64>) = claims.iter().map(|c| (c.id, c.token)).unzip();
        self.with(|c| {
            c.execute(
                "UPDATE groups g SET lease_until = NULL FROM unnest($1::bigint[], $2::bigint[]) AS mine(id, token)
                 WHERE g.id = mine.id AND g.claim = mine.token AND g.node = $3",
                &[&ids, &tokens, &self.node],
            )
            .map_err(db_err)?;
            c.execute("DELETE FROM nodes WHERE node = $1", &[&self.node]).map_err(db_err)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;

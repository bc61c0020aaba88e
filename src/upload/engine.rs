//! The scheduler: which groups run, control requests, auth pause, shutdown.
//! What a worker does is in `worker.rs`; the cancel protocol in `control.rs`;
//! the after-upload step and other housekeeping in `housekeeping.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::finish::watch_folder_missing;
use super::lease::{Held, clock_ms};
use super::stream::ChunkGate;
use super::worker::{self, Ctx, SESSION_WINDOW};
use super::{EngineError, GroupOutcome, control};
use crate::api::Client;
use crate::config::{ApiKey, Config, Dur};
use crate::journal::{AsyncJournal, Claim, GroupId, GroupRecord, GroupState, JournalError, PauseReason, Store, now_ms};
use crate::model::{PauseKind, RetryReason};
use crate::retry::RetryPolicy;

/// What the engine tells the rest of the agent (hooks, webhooks, metrics)
/// as it works. Every method has a no-op default; none may block.
pub trait Observer: Send + Sync {
    /// A group worker ended: completed, failed, canceled or expired (not a
    /// shutdown, not a refused key).
    fn group_ended(&self, _id: GroupId, _outcome: &GroupOutcome) {}
    /// A part's bytes were stored and recorded.
    fn part_stored(&self, _bytes: u64) {}
    /// A part PUT failed and is tried again, or its URL expired and a fresh
    /// one is asked for.
    fn part_retried(&self, _reason: RetryReason) {}
    /// The queue stopped (`paused = true`) or started again for `reason`
    /// (the key refused, or the gate, [`EngineOptions::gate`], closed).
    /// Reasons are independent: the queue runs only when none holds.
    fn paused(&self, _reason: PauseKind, _paused: bool) {}
}

/// Knobs that are not in the config file (tests, the one-shot command and
/// the agent's wiring set them).
#[derive(Clone)]
pub struct EngineOptions {
    /// How often the journal is re-read for new work and control requests.
    /// Bounds how fast a cancel request is seen (well under 2 s).
    pub poll: Duration,
    /// After the API refused the key, how long the queue stays paused
    /// before one group probes again.
    pub auth_recheck: Duration,
    /// How often ended groups' housekeeping (staged files of rejected
    /// groups, a crashed after-upload step) is looked for.
    pub housekeeping: Duration,
    /// When a server group ended without completing (expired, storage
    /// forgetting the upload) and the export is re-queued as a new one, the
    /// new group waits this long after the export's first server group of
    /// the hour, four times as long after its second (the third is the last:
    /// see `worker::MAX_SESSIONS_PER_WINDOW`).
    pub session_backoff: Duration,
    /// Awaited before each chunk of every PUT (a shared bandwidth limiter).
    pub throttle: Option<ChunkGate>,
    /// Told about groups ending, parts stored, pauses.
    pub observer: Option<Arc<dyn Observer>>,
    /// Upload windows, as a yes/no: while it reads `false` no group is
    /// claimed and no part started (parts in flight finish). `None`: always open.
    pub gate: Option<watch::Receiver<bool>>,
    /// A newer config (a reload). `[upload]` and `[[watch]]` take effect for
    /// every step that starts afterwards: `max_groups`, `max_parts_in_flight`,
    /// retries, URL batches, ETag checks, after-upload actions. `[api]` and
    /// `[journal]` stay as the engine was built (they need a restart).
    pub config: Option<watch::Receiver<Arc<Config>>>,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("poll", &self.poll)
            .field("auth_recheck", &self.auth_recheck)
            .field("housekeeping", &self.housekeeping)
            .field("session_backoff", &self.session_backoff)
            .field("throttle", &self.throttle.is_some())
            .field("observer", &self.observer.is_some())
            .field("gate", &self.gate.as_ref().map(|g| *g.borrow()))
            .field("config", &self.config.is_some())
            .finish()
    }
}

/// The longest an idle engine goes without asking the journal its
/// questions (requests, due retries, the operator's pause, the next group)
/// when nothing was committed meanwhile: what changes by the clock alone
/// (an automatic retry falling due, housekeeping) waits at most this long.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// An idle engine looks at the journal's generation this many times less
/// often than it polls while working (the default 500 ms: every 2 s), so
/// that an agent with nothing to do costs next to nothing; a new export
/// starts at most that much later.
const IDLE_SLOWER: u32 = 4;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            poll: Duration::from_millis(500),
            auth_recheck: Duration::from_secs(300),
            housekeeping: Duration::from_secs(60),
            session_backoff: Duration::from_secs(60),
            throttle: None,
            observer: None,
            gate: None,
            config: None,
        }
    }
}

/// What every worker shares.
pub(crate) struct Shared {
    /// The config in force; replaced on reload (see [`Shared::reconfigure`]).
    cfg: RwLock<Arc<Config>>,
    pub journal: AsyncJournal,
    pub client: Client,
    policy: RwLock<RetryPolicy>,
    /// `max_parts_in_flight` permits, across all groups.
    pub parts: Arc<Semaphore>,
    /// How many permits `parts` is meant to hold (resized on reload).
    parts_size: Mutex<usize>,
    /// See [`EngineOptions::gate`].
    pub gate: Option<watch::Receiver<bool>>,
    /// `true` while an operator's pause (recorded in the journal, looked at
    /// every poll) holds the queue: like a closed gate, no group or part starts.
    pub hold: watch::Sender<bool>,
    /// Bytes handed to the network by part PUTs (failed attempts taken back out).
    pub sent: Arc<AtomicU64>,
    /// Set by every successful API call: ends an auth pause.
    pub api_ok: AtomicBool,
    pub throttle: Option<ChunkGate>,
    pub observer: Option<Arc<dyn Observer>>,
}

impl Shared {
    /// The config in force now.
    pub(crate) fn cfg(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The per-request retry policy in force now.
    pub(crate) fn policy(&self) -> RetryPolicy {
        *self.policy.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Is the gate open (no gate: always) and no operator's pause holding
    /// the queue? A gate whose sender is gone keeps its last word.
    pub(crate) fn gate_open(&self) -> bool {
        self.gate.as_ref().is_none_or(|g| *g.borrow()) && !*self.hold.borrow()
    }

    /// Take a reloaded config: steps that start from now on follow it. The
    /// part semaphore grows at once; it shrinks as parts in flight end (a
    /// background task takes the surplus permits and forgets them), so no
    /// PUT is interrupted.
    fn reconfigure(&self, new: Arc<Config>) {
        let want = new.upload.max_parts_in_flight.max(1);
        {
            let mut size = self.parts_size.lock().unwrap_or_else(|p| p.into_inner());
            if want > *size {
                self.parts.add_permits(want - *size);
            } else if want < *size {
                let surplus = u32::try_from(*size - want).unwrap_or(u32::MAX);
                let parts = self.parts.clone();
                tokio::spawn(async move {
                    if let Ok(p) = parts.acquire_many_owned(surplus).await {
                        p.forget();
                    }
                });
            }
            *size = want;
        }
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = RetryPolicy::from_config(&new.upload);
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = new;
    }
}

/// The wait before a new server group for an export that already had
/// `recent` of them within the hour: none for the first, then `base`, then
/// four times `base`.
pub(crate) fn new_session_delay(base: Duration, recent: u32) -> Duration {
    match recent {
        0 => Duration::ZERO,
        n => base.saturating_mul(4u32.saturating_pow(n - 1).min(16)),
    }
}

/// A running group worker as the scheduler sees it.
struct Active {
    /// The claim the worker works under (renewed by the scheduler).
    held: Held,
    tok: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    /// Cancel requests waiting for this worker to end.
    requests: Vec<i64>,
}

/// The engine. Build it with [`Engine::new`], run it with [`Engine::run`]
/// (the agent) or [`Engine::run_one`] (one group in the foreground). The
/// caller holds the journal's [`crate::journal::EngineLock`].
pub struct Engine {
    sh: Arc<Shared>,
    opts: EngineOptions,
    /// The claims this engine's workers hold now; what is left here when the
    /// engine stops on a lost database ([`Engine::claims`]).
    claims: Mutex<HashMap<GroupId, Claim>>,
    /// Claims an earlier engine of this agent held when it lost the
    /// database: checked first thing ([`Engine::adopt`]).
    orphans: Mutex<Vec<Claim>>,
}

impl Engine {
    pub fn new(
        cfg: Arc<Config>,
        journal: Arc<dyn Store>,
        key: ApiKey,
        opts: EngineOptions,
    ) -> Result<Engine, EngineError> {
        let client = Client::new(&cfg.api, key)?;
        let policy = RetryPolicy::from_config(&cfg.upload);
        let size = cfg.upload.max_parts_in_flight.max(1);
        let parts = Arc::new(Semaphore::new(size));
        let sh = Shared {
            cfg: RwLock::new(cfg),
            journal: AsyncJournal::new(journal),
            client,
            policy: RwLock::new(policy),
            parts,
            parts_size: Mutex::new(size),
            gate: opts.gate.clone(),
            hold: watch::Sender::new(false),
            sent: Arc::new(AtomicU64::new(0)),
            api_ok: AtomicBool::new(false),
            throttle: opts.throttle.clone(),
            observer: opts.observer.clone(),
        };
        Ok(Engine { sh: Arc::new(sh), opts, claims: Mutex::default(), orphans: Mutex::default() })
    }

    /// What the workers share, for tests that drive one step of it.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    /// The claims this engine's workers held when it stopped (or hold now),
    /// with those it adopted and did not get to check.
    pub fn claims(&self) -> Vec<Claim> {
        let mut all: Vec<Claim> = self.claims.lock().unwrap_or_else(|p| p.into_inner()).values().copied().collect();
        all.extend(self.orphans.lock().unwrap_or_else(|p| p.into_inner()).iter().copied());
        all
    }

    /// Claims an earlier engine of this agent held when it stopped on a
    /// lost database: when this one starts, each that another node took over
    /// meanwhile is said (a log line and a history line naming both nodes);
    /// the others are claimed again as any queued work is.
    pub fn adopt(&self, claims: Vec<Claim>) {
        *self.orphans.lock().unwrap_or_else(|p| p.into_inner()) = claims;
    }

    fn track(&self, claim: Claim, held: bool) {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if held {
            claims.insert(claim.id, claim);
        } else {
            claims.remove(&claim.id);
        }
    }

    /// Bytes handed to the network since the engine started (in-flight
    /// parts included, failed attempts taken back out): for progress bars.
    pub fn bytes_sent(&self) -> Arc<AtomicU64> {
        self.sh.sent.clone()
    }

    pub fn journal(&self) -> &AsyncJournal {
        &self.sh.journal
    }

    /// Work the queue until `shutdown` fires, then stop in two phases
    /// (see the module doc). Returns `Ok` after a clean stop.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        self.schedule(shutdown, None).await.map(|_| ())
    }

    /// Work only group `id` until it ends (following it to the new group
    /// if it expires and is re-queued). Returns the group that ended and how.
    /// A refused key ends it with [`EngineError::AuthRefused`].
    pub async fn run_one(
        &self,
        id: GroupId,
        shutdown: CancellationToken,
    ) -> Result<(GroupId, GroupOutcome), EngineError> {
        let r = self.schedule(shutdown, Some(id)).await?;
        Ok(r.unwrap_or((id, GroupOutcome::Stopped)))
    }

    async fn schedule(
        &self,
        shutdown: CancellationToken,
        mut only: Option<GroupId>,
    ) -> Result<Option<(GroupId, GroupOutcome)>, EngineError> {
        let sh = &self.sh;
        {
            let sh = sh.clone();
            tokio::task::spawn_blocking(move || sh.housekeeping()).await.map_err(JournalError::from)??;
        }
        if only.is_none() {
            // A pause recorded by an earlier agent describes a process that is gone.
            sh.journal.call(|j| j.clear_pauses_like(&PauseReason::Auth)).await?;
        }
        let orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !orphans.is_empty() {
            let check = orphans.clone();
            let lost = sh.journal.call(move |j| j.renew_claims(&check)).await?;
            for claim in orphans.into_iter().filter(|c| lost.contains(&c.id)) {
                worker::lost_claim(sh, claim, None).await;
            }
            self.orphans.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        let mut config_rx = self.opts.config.clone();
        let mut gate_rx = self.opts.gate.clone();
        // The window pause as last reported (the auth pause is `paused_until`).
        let mut window_paused = false;
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let mut active: HashMap<GroupId, Active> = HashMap::new();
        let mut tasks: HashMap<tokio::task::Id, GroupId> = HashMap::new();
        let mut workers: JoinSet<(GroupId, Result<GroupOutcome, EngineError>)> = JoinSet::new();
        // Auth pause: until when, and whether a probe group is allowed.
        let mut paused_until: Option<Instant> = None;
        let mut last_housekeeping = Instant::now();
        // The round of housekeeping under way (on the blocking pool), if any.
        let mut housekeeping: Option<tokio::task::JoinHandle<Result<(), EngineError>>> = None;
        let mut result = None;
        // Groups whose watch folder is missing: not started again until it is back.
        let mut held: HashMap<GroupId, GroupRecord> = HashMap::new();
        // Re-queued exports whose last server groups ended without progress:
        // not started before the instant (in memory: a restart starts them
        // at once, and the per-hour limit still holds, counted from the journal).
        let mut backoff: HashMap<GroupId, Instant> = HashMap::new();
        // A fleet's claims are renewed every third of the lease.
        let lease = sh.journal.blocking().lease();
        let renew_every = lease.map(|l| l / 3);
        let mut last_renewal = Instant::now();
        // The journal's generation when the last round asked its
        // questions, and when that was (see `IDLE_RECHECK`).
        let mut asked_at: Option<u128> = None;
        let mut last_round = Instant::now();
        // Something besides the journal changed (the upload window, the
        // config): the next round asks in any case.
        let mut woken = false;

        'main: loop {
            if let Some(rx) = config_rx.as_mut()
                && rx.has_changed().unwrap_or(false)
            {
                let new = rx.borrow_and_update().clone();
                sh.reconfigure(new);
                woken = true;
                let u = &sh.cfg().upload;
                tracing::info!(
                    max_groups = u.max_groups,
                    max_parts_in_flight = u.max_parts_in_flight,
                    "engine: the reloaded [upload] settings apply from the next step on"
                );
            }
            if let Some(every) = renew_every
                && last_renewal.elapsed() >= every
            {
                last_renewal = Instant::now();
                // Groups held for a missing watch folder are left to lapse: a
                // node that has the folder may take them.
                let claims: Vec<Claim> = active.values().map(|a| a.held.claim()).collect();
                let sent = clock_ms();
                let lost = sh.journal.call(move |j| j.renew_claims(&claims)).await?;
                for (id, a) in &active {
                    if !lost.contains(id) {
                        a.held.confirm(sent);
                        continue;
                    }
                    // Another node took it over after a silence past the
                    // lease: stop without touching it (it goes on there).
                    a.tok.cancel();
                    worker::lost_claim(sh, a.held.claim(), None).await;
                }
            }
            // Idle, with nothing committed to the journal since the last
            // round: its questions would get the same answers. Asked again
            // at least every `IDLE_RECHECK` (a retry falls due by the clock).
            let idle = active.is_empty() && held.is_empty() && backoff.is_empty() && paused_until.is_none();
            let generation = if idle { sh.journal.call(|j| j.generation()).await? } else { None };
            if !std::mem::take(&mut woken)
                && generation.is_some()
                && generation == asked_at
                && last_round.elapsed() < IDLE_RECHECK
            {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'main,
                    _ = tokio::time::sleep(self.opts.poll * IDLE_SLOWER) => {}
                    () = gate_changed(&mut gate_rx) => woken = true,
                }
                continue;
            }
            asked_at = generation;
            last_round = Instant::now();
            // Control requests first: a cancel must not wait for scheduling.
            for req in sh.journal.call(|j| j.open_requests()).await? {
                let rid = req.id;
                let hand_over = |gid| match active.get_mut(&gid) {
                    // The worker drops its PUTs, sends DELETE and records the end.
                    Some(a) => {
                        *a.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(control::BY_USER.into());
                        a.tok.cancel();
                        a.requests.push(rid);
                        true
                    }
                    None => false,
                };
                control::handle_request(&sh.client, &sh.journal, &sh.policy(), req, hand_over).await?;
            }
            if only.is_none() {
                for id in sh.journal.call(|j| j.requeue_due(now_ms())).await? {
                    tracing::info!(group = id, "failed group re-queued for an automatic retry");
                }
                if let Some(done) = housekeeping.take_if(|h| h.is_finished()) {
                    match done.await {
                        Ok(Err(e)) => tracing::warn!(error = %e, "housekeeping failed; tried again later"),
                        Err(e) => tracing::error!(error = %e, "housekeeping ended abnormally"),
                        Ok(Ok(())) => {}
                    }
                }
                if housekeeping.is_none() && last_housekeeping.elapsed() >= self.opts.housekeeping {
                    let sh = sh.clone();
                    housekeeping = Some(tokio::task::spawn_blocking(move || sh.housekeeping()));
                    last_housekeeping = Instant::now();
                }
            }
            if paused_until.is_some() && sh.api_ok.load(Ordering::Relaxed) {
                tracing::info!("the API accepts the key again; uploads resume");
                paused_until = None;
                if let Err(e) = sh.journal.call(|j| j.clear_pause(&PauseReason::Auth)).await {
                    tracing::warn!(error = %e, "cannot record the end of the auth pause");
                }
                if let Some(o) = &self.opts.observer {
                    o.paused(PauseKind::Auth, false);
                }
            }
            if only.is_none() {
                // An operator's pause, from this process (the console) or another (`pause`).
                let held = sh.journal.call(|j| j.pause(&PauseReason::Operator)).await?.is_some();
                if sh.hold.send_if_modified(|h| std::mem::replace(h, held) != held) {
                    if held {
                        tracing::info!(
                            running = active.len(),
                            "paused by operator: no new group or part starts until resume; parts in flight finish"
                        );
                    } else {
                        tracing::info!("resumed by operator: the queue runs");
                    }
                    if let Some(o) = &self.opts.observer {
                        o.paused(PauseKind::Operator, held);
                    }
                }
            }
            let open = sh.gate.as_ref().is_none_or(|g| *g.borrow());
            if open == window_paused {
                window_paused = !open;
                if window_paused {
                    tracing::info!(
                        running = active.len(),
                        "outside the upload windows: no new group or part starts until a window opens"
                    );
                } else {
                    tracing::info!("an upload window is open: the queue runs");
                }
                if let Some(o) = &self.opts.observer {
                    o.paused(PauseKind::Window, window_paused);
                }
            }
            let probing = paused_until.is_some_and(|u| Instant::now() >= u);
            let limit = if !open || *sh.hold.borrow() {
                0
            } else if probing {
                1
            } else if paused_until.is_some() {
                0
            } else {
                sh.cfg().upload.max_groups.max(1)
            };
            held.retain(|id, g| {
                let back = watch_folder_missing(g).is_none();
                if back {
                    tracing::info!(group = id, "the watch folder is back; the group goes on");
                }
                !back
            });
            backoff.retain(|_, until| Instant::now() < *until);
            while active.len() < limit {
                let busy: Vec<GroupId> = active.keys().chain(held.keys()).chain(backoff.keys()).copied().collect();
                let sent = clock_ms();
                let next = match only {
                    Some(id) if busy.contains(&id) => None,
                    Some(id) => sh.journal.call(move |j| j.claim(id)).await?,
                    None => sh.journal.call(move |j| j.next_group(&busy)).await?,
                };
                let Some(claim) = next else { break };
                let id = claim.id;
                let held = Held::new(claim, lease, sent);
                let tok = abort.child_token();
                let reason = Arc::new(Mutex::new(None));
                let ctx = Ctx {
                    sh: sh.clone(),
                    id,
                    held: held.clone(),
                    stop: stop.clone(),
                    tok: tok.clone(),
                    reason: reason.clone(),
                };
                tracing::debug!(group = id, claim = claim.token, "group worker started");
                let handle = workers.spawn(async move { (id, worker::work(ctx).await) });
                tasks.insert(handle.id(), id);
                active.insert(id, Active { held, tok, reason, requests: Vec::new() });
                self.track(claim, true);
            }
            if let Some(id) = only
                && active.is_empty()
                && open
                && !backoff.contains_key(&id)
            {
                // Nothing runnable: the group ended (perhaps canceled from the CLI).
                let g = sh.journal.call(move |j| j.group(id)).await?;
                let error = g.error.clone().unwrap_or_default();
                let outcome = match g.state {
                    GroupState::Canceled => GroupOutcome::Canceled(error),
                    GroupState::Failed => GroupOutcome::Failed(error),
                    GroupState::Expired => GroupOutcome::Expired { requeued: None },
                    GroupState::Completed => GroupOutcome::Completed { library_id: g.library_id.unwrap_or(0) },
                    _ => GroupOutcome::Stopped,
                };
                result = Some((id, outcome));
                break 'main;
            }

            tokio::select! {
                _ = shutdown.cancelled() => break 'main,
                joined = workers.join_next_with_id(), if !workers.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (id, outcome) = match joined {
                        Ok((task, v)) => {
                            tasks.remove(&task);
                            v
                        }
                        Err(e) => {
                            // A panic in a worker: its group stays as recorded and is
                            // picked up again later; the slot is freed.
                            let id = tasks.remove(&e.id());
                            tracing::error!(group = ?id, error = %e, "a group worker ended abnormally");
                            if let Some(a) = id.and_then(|id| active.remove(&id)) {
                                self.track(a.held.claim(), false);
                            }
                            continue;
                        }
                    };
                    let ended = active.remove(&id);
                    if let Some(a) = &ended {
                        self.track(a.held.claim(), false);
                    }
                    let outcome = match outcome {
                        Ok(o) => o,
                        // The database out of reach: the engine stops and starts again.
                        Err(EngineError::Journal(e)) if e.is_transient() => return Err(e.into()),
                        Err(e) => {
                            // One group's trouble is not the engine's: the group stays
                            // as recorded and is tried again after a while.
                            tracing::error!(group = id, error = %e, "the group's worker stopped on an error; the group stays as recorded and is tried again in a minute");
                            backoff.insert(id, Instant::now() + Duration::from_secs(60));
                            GroupOutcome::Stopped
                        }
                    };
                    if matches!(outcome, GroupOutcome::Stopped) && !stop.is_cancelled() {
                        let g = sh.journal.call(move |j| j.group(id)).await?;
                        if watch_folder_missing(&g).is_some() {
                            held.insert(id, g);
                        }
                    }
                    if let (Some(o), false) =
                        (&self.opts.observer, matches!(outcome, GroupOutcome::Stopped | GroupOutcome::AuthRefused(_)))
                    {
                        o.group_ended(id, &outcome);
                    }
                    if let Some(a) = ended.filter(|a| !a.requests.is_empty()) {
                        control::answer_after_worker(&sh.journal, a.requests, &outcome).await?;
                    }
                    match &outcome {
                        GroupOutcome::AuthRefused(msg) => {
                            if only.is_some() {
                                self.stop_all(&stop, &abort, &mut workers).await;
                                return Err(EngineError::AuthRefused(msg.clone()));
                            }
                            if paused_until.is_none() {
                                if let Some(o) = &self.opts.observer {
                                    o.paused(PauseKind::Auth, true);
                                }
                                tracing::error!(
                                    error = %msg,
                                    recheck_in = %Dur(self.opts.auth_recheck),
                                    "THE API REFUSED THE KEY: all uploads are paused; fix api_key_env / api_key_file \
                                     (the key needs role admin or upload); the agent re-checks by itself"
                                );
                            } else {
                                tracing::debug!("the API still refuses the key");
                            }
                            sh.api_ok.store(false, Ordering::Relaxed);
                            paused_until = Some(Instant::now() + self.opts.auth_recheck);
                            // In the journal, so that `status` in another process shows it.
                            let next = now_ms().saturating_add(self.opts.auth_recheck.as_millis() as i64);
                            let msg = msg.clone();
                            if let Err(e) =
                                sh.journal.call(move |j| j.set_pause(&PauseReason::Auth, Some(&msg), Some(next))).await
                            {
                                tracing::warn!(error = %e, "cannot record the auth pause");
                            }
                        }
                        GroupOutcome::Expired { requeued: Some(new) } => {
                            let new_id = *new;
                            let recent = sh
                                .journal
                                .call(move |j| j.recent_sessions(new_id, now_ms(), SESSION_WINDOW.as_millis() as i64))
                                .await?;
                            let wait = new_session_delay(self.opts.session_backoff, recent);
                            if !wait.is_zero() {
                                tracing::info!(
                                    group = new, server_groups_this_hour = recent, wait = %Dur(wait),
                                    "the export's server groups keep ending without completing; the next one waits"
                                );
                                backoff.insert(*new, Instant::now() + wait);
                            }
                            if only == Some(id) {
                                only = Some(*new);
                            }
                        }
                        _ if only == Some(id) => {
                            result = Some((id, outcome.clone()));
                            break 'main;
                        }
                        _ => {}
                    }
                }
                _ = tokio::time::sleep(self.opts.poll) => {}
                () = gate_changed(&mut gate_rx) => {}
            }
        }
        self.stop_all(&stop, &abort, &mut workers).await;
        // What this engine still holds: the groups it was working on when it
        // stopped (an ended group's claim ends with it), held or waiting.
        let claimed: Vec<Claim> = active.values().map(|a| a.held.claim()).collect();
        if renew_every.is_some()
            && let Err(e) = sh.journal.call(move |j| j.release_claims(&claimed)).await
        {
            tracing::warn!(error = %e, "cannot give up this node's claims; other nodes take them when the lease ends");
        }
        Ok(result)
    }

    /// Two-phase stop: no new steps, in-flight parts get `shutdown_grace`,
    /// then everything still running is dropped.
    async fn stop_all(
        &self,
        stop: &CancellationToken,
        abort: &CancellationToken,
        workers: &mut JoinSet<(GroupId, Result<GroupOutcome, EngineError>)>,
    ) {
        stop.cancel();
        let grace = self.sh.cfg().upload.shutdown_grace.0;
        let drained = tokio::time::timeout(grace, async {
            while let Some(r) = workers.join_next().await {
                log_stopped(r);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = %Dur(grace), "parts still in flight after the shutdown grace; dropping them");
            abort.cancel();
            while let Some(r) = workers.join_next().await {
                log_stopped(r);
            }
        }
    }
}

/// Resolves when the gate changes; never when there is none (or its sender is gone).
async fn gate_changed(gate: &mut Option<watch::Receiver<bool>>) {
    let Some(g) = gate else { return std::future::pending().await };
    if g.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn log_stopped(r: Result<(GroupId, Result<GroupOutcome, EngineError>), tokio::task::JoinError>) {
    match r {
        Ok((id, Ok(outcome))) => tracing::debug!(group = id, ?outcome, "group worker stopped"),
        Ok((id, Err(e))) => tracing::error!(group = id, error = %e, "group worker failed while stopping"),
        Err(e) => tracing::error!(error = %e, "a group worker ended abnormally"),
    }
}

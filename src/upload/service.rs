//! The agent's engine as a service: the engine lock, then the queue until
//! shutdown, started again while the journal's database is out of reach.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::EngineError;
use super::engine::{Engine, EngineOptions};
use crate::config::{ApiKey, Config, Dur};
use crate::journal::{AsyncJournal, Claim, Store};

/// The agent's engine: open the journal, take the engine lock (waiting while
/// another engine, e.g. a foreground `upload`, holds it), then work the
/// queue until `shutdown`.
///
/// A journal database out of reach ([`crate::journal::JournalError::Unavailable`]: a fleet's
/// PostgreSQL restarting, the network cut) stops claims and recording: the
/// engine stops its workers (parts whose ETag could not be recorded are
/// sent again later) and starts again once the database answers, waiting
/// 1 s, 2 s, 4 s … up to 30 s between tries.
pub async fn run_engine(
    cfg: Arc<Config>,
    journal: Arc<dyn Store>,
    key: ApiKey,
    opts: EngineOptions,
    shutdown: CancellationToken,
) -> Result<(), EngineError> {
    let mut wait = Duration::from_secs(1);
    // What the last engine held when it lost the database: the next one says
    // which of them another node took over meanwhile.
    let mut held = Vec::new();
    loop {
        let began = Instant::now();
        let once =
            run_engine_once(cfg.clone(), journal.clone(), key.clone(), opts.clone(), shutdown.clone(), &mut held);
        match once.await {
            Err(EngineError::Journal(e)) if e.is_transient() && !shutdown.is_cancelled() => {
                if began.elapsed() > Duration::from_secs(60) {
                    wait = Duration::from_secs(1);
                }
                tracing::error!(
                    journal = %journal.describe(), error = %e, retry_in = %Dur(wait),
                    "THE JOURNAL DATABASE IS UNREACHABLE: no group is claimed and nothing is recorded until it \
                     answers; the engine starts again by itself"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}

async fn run_engine_once(
    cfg: Arc<Config>,
    journal: Arc<dyn Store>,
    key: ApiKey,
    opts: EngineOptions,
    shutdown: CancellationToken,
    held: &mut Vec<Claim>,
) -> Result<(), EngineError> {
    let mut told = false;
    let calls = AsyncJournal::new(journal.clone());
    let _lock = loop {
        if let Some(lock) = calls.call(|j| j.try_lock_engine()).await? {
            break lock;
        }
        if !told {
            tracing::warn!(journal = %journal.describe(), "another engine works this journal; waiting for it to finish");
            told = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let engine = Engine::new(cfg, journal, key, opts)?;
    engine.adopt(std::mem::take(held));
    let r = engine.run(shutdown).await;
    *held = engine.claims();
    r
}

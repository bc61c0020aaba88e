//! `spatialgen-sync sandbox`: run the local SpatialGen-compatible server in
//! the foreground until Ctrl-C or SIGTERM.

use std::path::Path;

use anyhow::Context;

use super::{Outcome, SandboxArgs, UsageError};
use crate::sandbox::{Sandbox, SandboxOptions};

pub fn run(args: SandboxArgs) -> anyhow::Result<Outcome> {
    if args.part_size == Some(0) {
        return Err(UsageError("--part-size must be a positive number of bytes".into()).into());
    }
    // Without --data, a fresh folder that is removed again on exit.
    let (data, temporary) = match args.data {
        Some(dir) => (dir, false),
        None => (std::env::temp_dir().join(format!("spatialgen-sandbox-{}", uuid::Uuid::new_v4())), true),
    };
    let mut opts = SandboxOptions::new(&data);
    opts.api_key = args.key;
    if let Some(size) = args.part_size {
        opts.part_size = size;
    }
    let rt = super::runtime()?;
    let result = rt.block_on(serve(args.listen, opts, &data));
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    result
}

async fn serve(listen: std::net::SocketAddr, opts: SandboxOptions, data: &Path) -> anyhow::Result<Outcome> {
    let keyed = opts.api_key.is_some();
    let part_size = opts.part_size;
    let sandbox =
        Sandbox::start(listen, opts).await.with_context(|| format!("cannot start the sandbox on {listen}"))?;
    println!("SpatialGen sandbox running");
    println!("  endpoint:  {}", sandbox.base_url());
    println!("  storage:   {}", sandbox.storage_url());
    println!("  data:      {}", data.display());
    println!("  part size: {part_size} bytes");
    println!(
        "  key:      {}",
        if keyed { "the one given (--key / SPATIALGEN_SANDBOX_KEY)" } else { "any non-empty key" }
    );
    println!("  state:     {}/_sandbox/state", sandbox.base_url());
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await?;
    println!("stopping");
    sandbox.shutdown().await;
    Ok(Outcome::Success)
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")
}

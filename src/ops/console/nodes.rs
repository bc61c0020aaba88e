//! `GET /api/v1/nodes`: who works the queue.
//!
//! In a fleet (a PostgreSQL journal) every node whose engine renews its
//! heartbeat is listed, by name, with when it was last heard from, the
//! groups it uploads under a live lease, its version and lease, and
//! whether it has been silent past its lease (by the database's clock): a
//! silent node's groups are taken over by the others. A node that stopped
//! cleanly removed its row and is not listed.
//!
//! A single machine (SQLite) has no fleet: the answer says `"fleet": false`
//! and lists this agent as the one node, heard from now, holding the groups
//! that are uploading, with no lease (`0`: its claims need no renewal).
//! A page shows the same list either way.
//!
//! ```json
//! {"fleet": true, "nodes": [{"name": "render-07", "lastSeen": 1765110000000,
//!   "held": 2, "version": "0.9.0", "leaseMs": 30000, "silent": false}]}
//! ```

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{Console, ConsoleError};
use crate::journal::{GroupState, NodeInfo};

/// One node as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    /// When it was last heard from, ms since the epoch.
    pub last_seen: i64,
    /// Groups it uploads now (under a live lease, in a fleet).
    pub held: u64,
    pub version: String,
    /// Its lease in ms; 0 on a single machine.
    pub lease_ms: i64,
    /// Not heard from within its lease.
    pub silent: bool,
}

impl From<NodeInfo> for NodeView {
    fn from(n: NodeInfo) -> NodeView {
        NodeView {
            name: n.name,
            last_seen: n.last_seen_ms,
            held: n.held,
            version: n.version,
            lease_ms: n.lease_ms,
            silent: n.silent,
        }
    }
}

/// The answer of `GET /api/v1/nodes`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodesView {
    /// Is the journal a fleet's (PostgreSQL)?
    pub fleet: bool,
    pub nodes: Vec<NodeView>,
}

/// `GET /api/v1/nodes`: one journal call (one query in a fleet, one count
/// on a single machine).
pub(super) async fn nodes(State(c): State<Console>) -> Result<Response, ConsoleError> {
    let (fleet, listed, uploading) = c
        .journal
        .call(|j| {
            if j.node().is_some() {
                return Ok((true, j.nodes()?, 0));
            }
            let uploading =
                j.count_by_state()?.into_iter().find(|(s, _)| *s == GroupState::Uploading).map_or(0, |(_, n)| n);
            Ok((false, Vec::new(), uploading))
        })
        .await?;
    let nodes = if fleet {
        listed.into_iter().map(NodeView::from).collect()
    } else {
        let agent = c.controls.agent();
        vec![NodeView {
            name: agent.node.unwrap_or_else(|| "this agent".to_string()),
            last_seen: crate::journal::now_ms(),
            held: uploading,
            version: agent.version.to_string(),
            lease_ms: 0,
            silent: false,
        }]
    };
    Ok(axum::Json(NodesView { fleet, nodes }).into_response())
}

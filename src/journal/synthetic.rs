//! A year of history in one statement: ended groups appended to a journal,
//! for the benchmark and the tests that check what a poll, a page or the
//! running agent costs with a journal that is large.
//!
//! Each synthetic group is one export under `/synthetic/` (`shot-000001`,
//! ...) with one file, one done part and three history lines (queued,
//! uploading, its end), its times spread over the year before now. About
//! one in a thousand failed (no automatic retry left: it waits for a
//! person) and one in a thousand was rejected; the rest completed with
//! their after-upload step done. Nothing is queued, so an agent started on
//! the journal has nothing to do but what arrives.

use super::pg::{PgJournal, db_err};
use super::{Journal, JournalError};
use crate::journal::codec::now_ms;

/// The span the synthetic groups' times cover, before now.
const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

/// Which state the `i`th synthetic group ended in, as SQL over `i`.
const STATE_OF_I: &str = "CASE WHEN i % 1000 = 1 THEN 'failed' WHEN i % 1000 = 500 THEN 'rejected' ELSE 'completed' END";

/// The error a synthetic failed group shows.
const FAILED: &str = "the server answered 500 to every attempt";
/// The error a synthetic rejected group shows.
const REJECTED: &str = "[media-truncated] video.mov: no moov box";

/// The time of the `i`th of `n` groups, as SQL: spread over the year, the
/// last one a minute ago.
fn time_of_i(n: u64, now: i64) -> String {
    let step = (YEAR_MS / n.max(1) as i64).max(1);
    format!("({now} - 60000 - ({n} - i) * {step})")
}

impl Journal {
    /// Append `groups` ended groups (see the module). Returns the id of
    /// the first one.
    pub fn synthesize_history(&self, groups: u64) -> Result<i64, JournalError> {
        let at = time_of_i(groups, now_ms());
        let state = STATE_OF_I;
        self.write(|tx| {
            let base: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM groups", [], |r| r.get(0))?;
            tx.execute_batch(&format!(
                "CREATE TEMP TABLE synthetic (id INTEGER PRIMARY KEY, state TEXT NOT NULL, at INTEGER NOT NULL);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {groups})
                   INSERT INTO synthetic (id, state, at) SELECT {base} + i, {state}, {at} FROM n;
                 INSERT INTO groups (id, key, name, root, watch_path, state, layout, perspective, fingerprint,
                                     violations, session_id, library_id, error, created_at, updated_at, queued_at,
                                     finished)
                   SELECT id, CAST(printf('/synthetic/shot-%06d', id) AS BLOB), printf('shot-%06d', id),
                          CAST(printf('/synthetic/shot-%06d', id) AS BLOB), CAST('/synthetic' AS BLOB),
                          state, '2D', 'Regular', printf('synthetic-%d', id),
                          NULL,
                          CASE WHEN state = 'completed' THEN printf('synthetic-session-%d', id) END,
                          CASE WHEN state = 'completed' THEN id END,
                          CASE state WHEN 'failed' THEN '{FAILED}' WHEN 'rejected' THEN '{REJECTED}' END,
                          at, at, at, 1
                   FROM synthetic;
                 INSERT INTO files (group_id, position, source, rel_path, file_name, role, size, mtime_ns, state)
                   SELECT id, 0, CAST(printf('/synthetic/shot-%06d/video.mov', id) AS BLOB), 'video.mov',
                          'video.mov', 'video', 48000, at * 1000000,
                          CASE WHEN state = 'completed' THEN 'completed' ELSE 'pending' END
                   FROM synthetic;
                 INSERT INTO parts (file_id, part_number, byte_start, size, etag, state)
                   SELECT f.id, 1, 0, 48000, '\"synthetic\"', 'done'
                   FROM files f JOIN synthetic s ON f.group_id = s.id;
                 INSERT INTO events (group_id, at, from_state, to_state)
                   SELECT id, at - 2000, NULL, 'queued' FROM synthetic;
                 INSERT INTO events (group_id, at, from_state, to_state)
                   SELECT id, at - 1000, 'queued', 'uploading' FROM synthetic WHERE state <> 'rejected';
                 INSERT INTO events (group_id, at, from_state, to_state)
                   SELECT id, at, CASE WHEN state = 'rejected' THEN 'queued' ELSE 'uploading' END, state
                   FROM synthetic;
                 DROP TABLE synthetic;"
            ))?;
            Ok(base + 1)
        })
    }
}

impl PgJournal {
    /// Append `groups` ended groups (see the module), held by this node.
    /// Returns the id of the first one.
    pub fn synthesize_history(&self, groups: u64) -> Result<i64, JournalError> {
        let at = time_of_i(groups, now_ms());
        let state = STATE_OF_I;
        let node = self.node_name().to_string();
        self.with(move |c| {
            let mut tx = c.transaction().map_err(db_err)?;
            let base: i64 = tx.query_one("SELECT COALESCE(MAX(id), 0) FROM groups", &[]).map_err(db_err)?.get(0);
            let node = node.replace('\'', "''");
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE synthetic ON COMMIT DROP AS
                   SELECT i, {base} + i AS id, {state} AS state, {at} AS at FROM generate_series(1::bigint, {groups}) AS i;
                 INSERT INTO groups (id, key, name, root, watch_path, state, layout, perspective, fingerprint,
                                     violations, session_id, library_id, error, created_at, updated_at, queued_at,
                                     finished, node)
                   SELECT id, convert_to(format('/synthetic/shot-%s', lpad(id::text, 6, '0')), 'UTF8'),
                          format('shot-%s', lpad(id::text, 6, '0')),
                          convert_to(format('/synthetic/shot-%s', lpad(id::text, 6, '0')), 'UTF8'),
                          convert_to('/synthetic', 'UTF8'), state, '2D', 'Regular', 'synthetic-' || id,
                          NULL,
                          CASE WHEN state = 'completed' THEN 'synthetic-session-' || id END,
                          CASE WHEN state = 'completed' THEN id END,
                          CASE state WHEN 'failed' THEN '{FAILED}' WHEN 'rejected' THEN '{REJECTED}' END,
                          at, at, at, true, '{node}'
                   FROM synthetic;
                 INSERT INTO files (group_id, position, source, rel_path, file_name, role, size, mtime_ns, state)
                   SELECT id, 0, convert_to(format('/synthetic/shot-%s/video.mov', lpad(id::text, 6, '0')), 'UTF8'),
                          'video.mov', 'video.mov', 'video', 48000, at * 1000000,
                          CASE WHEN state = 'completed' THEN 'completed' ELSE 'pending' END
                   FROM synthetic;
                 INSERT INTO parts (file_id, part_number, byte_start, size, etag, state)
                   SELECT f.id, 1, 0, 48000, '\"synthetic\"', 'done' FROM files f JOIN synthetic s ON f.group_id = s.id;
                 INSERT INTO events (group_id, at, from_state, to_state)
                   SELECT id, at - 2000, NULL, 'queued' FROM synthetic;
                 INSERT INTO events (group_id, at, from_state, to_state)
                   SELECT id, at - 1000, 'queued', 'uploading' FROM synthetic WHERE state <> 'rejected';
                 INSERT INTO events (group_id, at, from_state, to_state)
                   SELECT id, at, CASE WHEN state = 'rejected' THEN 'queued' ELSE 'uploading' END, state
                   FROM synthetic;
                 SELECT setval(pg_get_serial_sequence('groups', 'id'), (SELECT MAX(id) FROM groups));
                 SELECT setval(pg_get_serial_sequence('files', 'id'), (SELECT MAX(id) FROM files));
                 ANALYZE groups; ANALYZE files; ANALYZE parts; ANALYZE events;"
            ))
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(base + 1)
        })
    }
}

//! The journal's schema, as an ordered list of migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Opening a
//! journal applies every pending migration in one `IMMEDIATE` transaction (so
//! two processes opening an old journal at once cannot both migrate it), and
//! refuses a journal whose version is higher than [`LATEST`]: an older binary
//! must not write rows a newer one would misread.
//!
//! A migration is never edited once released; a change of schema is a new
//! entry at the end. `fixtures/v1.sql`, `fixtures/v2.sql` and `fixtures/v4.sql`
//! are frozen journals at versions 1, 2 and 4 that the tests upgrade.

/// Migration `i` (0-based) brings the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // v1: groups, their files and parts, and control requests.
    r#"
    CREATE TABLE groups (
        id            INTEGER PRIMARY KEY,
        key           TEXT NOT NULL,
        name          TEXT NOT NULL,
        root          TEXT NOT NULL,
        watch_path    TEXT,
        state         TEXT NOT NULL CHECK (state IN
                        ('waiting','queued','uploading','completed','rejected','failed','canceled','expired')),
        layout        TEXT,
        perspective   TEXT,
        description   TEXT,
        folder_name   TEXT,
        priority      INTEGER NOT NULL DEFAULT 0,
        fingerprint   TEXT,
        violations    TEXT,
        session_id    TEXT,
        expires_at    TEXT,
        session_at    INTEGER,
        library_id    INTEGER,
        error         TEXT,
        retry_at      INTEGER,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX groups_session ON groups(session_id) WHERE session_id IS NOT NULL;
    CREATE INDEX groups_fingerprint ON groups(fingerprint);
    CREATE INDEX groups_state ON groups(state);

    CREATE TABLE files (
        id            INTEGER PRIMARY KEY,
        group_id      INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        source        TEXT NOT NULL,
        rel_path      TEXT NOT NULL,
        file_name     TEXT NOT NULL,
        role          TEXT NOT NULL,
        language      TEXT,
        size          INTEGER NOT NULL,
        mtime_ns      INTEGER NOT NULL,
        staged        INTEGER NOT NULL DEFAULT 0,
        upload_id     TEXT,
        part_size     INTEGER,
        total_parts   INTEGER,
        strategy      TEXT,
        state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','uploading','completed')),
        UNIQUE (group_id, position)
    );

    CREATE TABLE parts (
        file_id       INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
        part_number   INTEGER NOT NULL,
        byte_start    INTEGER NOT NULL,
        size          INTEGER NOT NULL,
        etag          TEXT,
        state         TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending','done')),
        PRIMARY KEY (file_id, part_number)
    ) WITHOUT ROWID;

    CREATE TABLE requests (
        id            INTEGER PRIMARY KEY,
        group_id      INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        kind          TEXT NOT NULL CHECK (kind IN ('cancel','retry')),
        created_at    INTEGER NOT NULL,
        handled_at    INTEGER,
        result        TEXT
    );
    CREATE INDEX requests_open ON requests(handled_at) WHERE handled_at IS NULL;
    "#,
    // v2: the history of every group, links between a group and the one
    // that replaced it (retry, expiry), and the after-upload bookkeeping.
    // Paths become blobs (the raw OS bytes), so that any file name round-trips.
    r#"
    UPDATE groups SET key = CAST(key AS BLOB), root = CAST(root AS BLOB), watch_path = CAST(watch_path AS BLOB);
    UPDATE files SET source = CAST(source AS BLOB);
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        group_id      INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        at            INTEGER NOT NULL,
        from_state    TEXT,
        to_state      TEXT,
        detail        TEXT
    );
    CREATE INDEX events_group ON events(group_id, id);
    ALTER TABLE groups ADD COLUMN retry_of INTEGER REFERENCES groups(id);
    ALTER TABLE groups ADD COLUMN user_canceled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN finished INTEGER NOT NULL DEFAULT 0;
    -- One export has at most one group that is still settling or waiting for the engine.
    CREATE UNIQUE INDEX groups_pending_key ON groups(key) WHERE state IN ('waiting','queued');
    -- Groups completed before this version had their after-upload step done already.
    UPDATE groups SET finished = 1 WHERE state IN ('completed','rejected','canceled','expired');
    "#,
    // v3: queue order and a tail-able history.
    // `queued_at`: when the export was found finished (the group became
    // `queued`); inside one priority the queue runs oldest first by it, so a
    // retried or re-queued group keeps its place. Filled for old rows from
    // their history.
    // `events.id` becomes AUTOINCREMENT: an id is never handed out twice, even
    // after the newest rows were deleted with their group (a dropped `waiting`
    // row), so a reader that remembers the last id it saw misses nothing.
    r#"
    ALTER TABLE groups ADD COLUMN queued_at INTEGER;
    UPDATE groups SET queued_at = COALESCE(
        (SELECT MAX(e.at) FROM events e WHERE e.group_id = groups.id AND e.to_state = 'queued'), created_at)
      WHERE state NOT IN ('waiting','rejected');
    CREATE INDEX groups_queue ON groups(state, priority, queued_at);
    CREATE TABLE events_v3 (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id      INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        at            INTEGER NOT NULL,
        from_state    TEXT,
        to_state      TEXT,
        detail        TEXT
    );
    INSERT INTO events_v3 (id, group_id, at, from_state, to_state, detail)
        SELECT id, group_id, at, from_state, to_state, detail FROM events;
    DROP TABLE events;
    ALTER TABLE events_v3 RENAME TO events;
    CREATE INDEX events_group ON events(group_id, id);
    "#,
    // v4: a file's identity and the agent's pauses.
    // `files.dev` / `files.ino`: the device and inode the file had when it was
    // grouped; before any byte is read, deleted or moved the open file must
    // still be that one (NULL for rows from older versions: size and mtime only).
    // `pauses`: why the queue is held (one row per reason: `auth`, `window`,
    // `operator`, ...), so that a separate `status` process can show it.
    r#"
    ALTER TABLE files ADD COLUMN dev INTEGER;
    ALTER TABLE files ADD COLUMN ino INTEGER;
    CREATE TABLE pauses (
        reason        TEXT PRIMARY KEY,
        detail        TEXT,
        since         INTEGER NOT NULL,
        next_check    INTEGER
    );
    "#,
    // v5: where each reader of the history stands. One row per notification
    // consumer (`hook:on_complete`, `webhook`, ...): the id of the last
    // history line it is done with. It moves only after the consumer
    // delivered (or gave up on) every ended group up to that line, so a
    // crash repeats at most the one in flight and loses none.
    r#"
    CREATE TABLE cursors (
        name          TEXT PRIMARY KEY,
        event_id      INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    "#,
    // v6: what each file's container said when it was grouped (the media
    // check's facts, JSON as `plan --json` prints them; NULL when it was
    // not looked into), for `show` and the console.
    r#"
    ALTER TABLE files ADD COLUMN media TEXT;
    "#,
    // v7: fencing. `groups.claim` is the token of the group's newest claim:
    // every claim or takeover stores a larger one, and a worker's writes for
    // the group are made only while its token is still this one.
    r#"
    ALTER TABLE groups ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
    "#,
    // v8: a completed group's after-upload step (delete or move the export,
    // write the receipt) as typed facts: how many attempts failed, the
    // newest error, and when the next attempt is due (NULL: none pending).
    // Rows from older versions start at no failures: the history lines an
    // older binary wrote for failed attempts stay for people to read, and a
    // pending retry among them is simply tried at once.
    r#"
    ALTER TABLE groups ADD COLUMN after_failures INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN after_error TEXT;
    ALTER TABLE groups ADD COLUMN after_next_ms INTEGER;
    "#,
    // v9: indexes for what the console and `status` ask on every poll, so
    // that a page costs the same with a year of history. Pages walk
    // `groups_state` (its entries are ordered by state, then id: SQLite
    // appends the rowid). `groups_updated` serves `status --since`;
    // `groups_unfinished` the few groups whose end-of-group step is still
    // to do: the engine's housekeeping round, and the completed groups
    // whose after-upload step will be tried again (the console's "needs
    // attention"). `groups_key` and `groups_root`: the watcher asks whether
    // each export it sees is known already, by its path.
    r#"
    CREATE INDEX groups_updated ON groups(updated_at);
    CREATE INDEX groups_unfinished ON groups(id) WHERE finished = 0;
    CREATE INDEX groups_key ON groups(key);
    CREATE INDEX groups_root ON groups(root);
    "#,
];

/// The schema version this binary writes.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

//! Which groups a page of `status` shows: a filter both backends turn into
//! one `WHERE` clause, so that a page of history costs the same with ten
//! groups in the journal or a hundred thousand.
//!
//! Pages run newest first (`id DESC`) and the cursor is the last id shown:
//! ids only grow, so a page asked for again with the same `before` shows
//! the same groups, whatever was added since.

use super::{GroupId, GroupState};

/// The most rows one page may ask for.
pub const MAX_PAGE: u32 = 500;

/// What [`Queue::groups`](super::Queue::groups) keeps. Every condition set
/// must hold; the default keeps every group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFilter {
    /// Only groups in one of these states (all when empty).
    pub states: Vec<GroupState>,
    /// Only groups whose name or path holds this text (case-insensitive for
    /// ASCII letters; `%`, `_` and `\` are plain characters).
    pub text: Option<String>,
    /// Only groups with an id below this one (the cursor of the next page).
    pub before: Option<GroupId>,
    /// Only groups with a history line newer than this one (an id of
    /// [`History::last_event_id`](super::History::last_event_id)): what
    /// changed since a reader last looked.
    pub changed_after: Option<i64>,
    /// Only groups changed at or after this time (ms since the epoch).
    pub updated_since_ms: Option<i64>,
    /// Only groups this node holds or ended (a fleet; none on SQLite).
    pub node: Option<String>,
    /// Only completed groups whose after-upload step failed and will be
    /// tried again.
    pub after_pending: bool,
    /// At most this many rows, the newest (none: every matching row).
    pub limit: Option<u32>,
    /// Take the rows in the order the engine takes queued groups (the next
    /// one first) rather than newest first; `limit` keeps the first ones.
    pub queue_order: bool,
}

/// One value bound into a filter's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// How a backend spells what differs between the two dialects.
pub(super) struct Dialect {
    /// The placeholder for the n-th (1-based) parameter.
    pub placeholder: fn(usize) -> String,
    /// `column LIKE pattern`, case-insensitive for ASCII.
    pub like: &'static str,
    /// The export's path as text, for the search.
    pub key_text: &'static str,
    /// Whether groups have a `node` column.
    pub has_node: bool,
    /// A group whose after-upload step is not done.
    pub unfinished: &'static str,
}

pub(super) const SQLITE: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    like: "LIKE",
    key_text: "CAST(g.key AS TEXT)",
    has_node: false,
    unfinished: "g.finished = 0",
};

pub(super) const POSTGRES: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    like: "ILIKE",
    key_text: "encode(g.key, 'escape')",
    has_node: true,
    unfinished: "NOT g.finished",
};

/// `text` as a `LIKE` pattern that matches it anywhere, with `\` escaping
/// the pattern's own characters.
pub(super) fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl GroupFilter {
    /// The newest `limit` groups in `states`.
    pub fn newest(states: &[GroupState], limit: u32) -> GroupFilter {
        GroupFilter { states: states.to_vec(), limit: Some(limit), ..GroupFilter::default() }
    }

    /// `SELECT g.id FROM groups g WHERE … ORDER BY g.id DESC [LIMIT n]` and
    /// its parameters: the ids of the page, newest first.
    pub(super) fn ids_sql(&self, d: &Dialect) -> (String, Vec<Param>) {
        let mut params = Vec::new();
        let next = |p: Param, params: &mut Vec<Param>| {
            params.push(p);
            (d.placeholder)(params.len())
        };
        let mut conds: Vec<String> = Vec::new();
        if !self.states.is_empty() {
            let list: Vec<String> =
                self.states.iter().map(|s| next(Param::Text(s.as_str().to_string()), &mut params)).collect();
            conds.push(format!("g.state IN ({})", list.join(", ")));
        }
        if let Some(text) = self.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            let p = next(Param::Text(contains_pattern(text)), &mut params);
            conds.push(format!(
                "(g.name {like} {p} ESCAPE '\\' OR {key} {like} {p} ESCAPE '\\')",
                like = d.like,
                key = d.key_text
            ));
        }
        if let Some(before) = self.before {
            conds.push(format!("g.id < {}", next(Param::Int(before), &mut params)));
        }
        if let Some(after) = self.changed_after {
            conds.push(format!(
                "g.id IN (SELECT e.group_id FROM events e WHERE e.id > {})",
                next(Param::Int(after), &mut params)
            ));
        }
        if let Some(since) = self.updated_since_ms {
            conds.push(format!("g.updated_at >= {}", next(Param::Int(since), &mut params)));
        }
        if let Some(node) = &self.node {
            if d.has_node {
                conds.push(format!("g.node = {}", next(Param::Text(node.clone()), &mut params)));
            } else {
                conds.push("1 = 0".into());
            }
        }
        if self.after_pending {
            conds.push(format!("{} AND g.after_failures > 0", d.unfinished));
        }
        // Several states and a limit: one arm per state, each walking its
        // part of the state index backwards and stopping at the limit, then
        // the newest of them; one `state IN (…)` walk would read and sort
        // every group of those states (nearly all of them, for history).
        if let (true, Some(limit), false) = (self.states.len() > 1, self.limit, self.queue_order) {
            let (state, rest) = conds.split_first().map(|(s, r)| (s.clone(), r.to_vec())).unwrap_or_default();
            debug_assert!(state.starts_with("g.state IN"));
            let arms: Vec<String> = (1..=self.states.len())
                .map(|i| {
                    let mut arm = vec![format!("g.state = {}", (d.placeholder)(i))];
                    arm.extend(rest.iter().cloned());
                    format!(
                        "SELECT a{i}.id FROM (SELECT g.id FROM groups g WHERE {} ORDER BY g.id DESC LIMIT {limit}) AS a{i}",
                        arm.join(" AND ")
                    )
                })
                .collect();
            return (
                format!("SELECT id FROM ({}) AS arms ORDER BY id DESC LIMIT {limit}", arms.join(" UNION ALL ")),
                params,
            );
        }
        let mut sql = String::from("SELECT g.id FROM groups g");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        if self.queue_order {
            sql.push_str(&format!(" ORDER BY {}", super::queue::QUEUE_ORDER));
        } else {
            sql.push_str(" ORDER BY g.id DESC");
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        (sql, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_pattern_escapes_likes_own_characters() {
        assert_eq!(contains_pattern("a_b%c\\d"), "%a\\_b\\%c\\\\d%");
        assert_eq!(contains_pattern("plain"), "%plain%");
    }

    #[test]
    fn an_empty_filter_lists_every_group_newest_first() {
        let (sql, params) = GroupFilter::default().ids_sql(&SQLITE);
        assert_eq!(sql, "SELECT g.id FROM groups g ORDER BY g.id DESC");
        assert!(params.is_empty());
    }

    #[test]
    fn each_condition_gets_its_own_numbered_parameter_in_each_dialect() {
        let f = GroupFilter {
            states: vec![GroupState::Completed, GroupState::Canceled],
            text: Some(" trailer ".into()),
            before: Some(900),
            changed_after: Some(12),
            updated_since_ms: Some(5),
            node: Some("render-01".into()),
            after_pending: true,
            limit: Some(50),
            queue_order: false,
        };
        let (sql, params) = GroupFilter { limit: None, ..f.clone() }.ids_sql(&POSTGRES);
        assert!(sql.contains("g.state IN ($1, $2)"), "{sql}");
        assert!(sql.contains("g.name ILIKE $3 ESCAPE '\\' OR encode(g.key, 'escape') ILIKE $3"), "{sql}");
        assert!(sql.contains("g.id < $4"), "{sql}");
        assert!(sql.contains("e.id > $5"), "{sql}");
        assert!(sql.contains("g.updated_at >= $6"), "{sql}");
        assert!(sql.contains("g.node = $7"), "{sql}");
        assert!(sql.contains("NOT g.finished AND g.after_failures > 0"), "{sql}");
        assert!(sql.ends_with("ORDER BY g.id DESC"), "{sql}");
        assert_eq!(
            params,
            vec![
                Param::Text("completed".into()),
                Param::Text("canceled".into()),
                Param::Text("%trailer%".into()),
                Param::Int(900),
                Param::Int(12),
                Param::Int(5),
                Param::Text("render-01".into()),
            ]
        );
        // SQLite has no node column: a node filter keeps nothing there.
        let (sql, params) = GroupFilter { limit: None, ..f.clone() }.ids_sql(&SQLITE);
        assert!(sql.contains("g.state IN (?1, ?2)") && sql.contains("1 = 0"), "{sql}");
        assert_eq!(params.len(), 6);
        // With a limit: one arm per state, each with its own limit, the same
        // parameters.
        let (sql, limited) = f.ids_sql(&SQLITE);
        assert!(
            sql.contains("WHERE g.state = ?1 AND (g.name LIKE ?3") && sql.contains("WHERE g.state = ?2 AND"),
            "{sql}"
        );
        assert_eq!(sql.matches("ORDER BY g.id DESC LIMIT 50").count(), 2, "{sql}");
        assert!(sql.ends_with("UNION ALL") || sql.ends_with("ORDER BY id DESC LIMIT 50"), "{sql}");
        assert_eq!(limited, params);
    }

    #[test]
    fn a_blank_search_is_no_search() {
        let f = GroupFilter { text: Some("   ".into()), ..GroupFilter::default() };
        assert!(!f.ids_sql(&SQLITE).0.contains("LIKE"));
    }
}

//! The SQL each database is spoken to in, built once per backend: the tables (one per
//! MVCC family, keys compared as bytes, each with its primary key index), the statements of
//! the storage interface, and the few phrases that differ (placeholders, upserts, how a
//! transaction takes the revision lock, the database's clock).

use cairn_mvcc::Family;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    /// MySQL or MariaDB (a Galera cluster included).
    MySql,
    Sqlite,
}

/// The schema version this build writes and reads. A database with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// The statements of one family's table.
#[derive(Debug, Clone)]
pub struct FamilySql {
    pub get: String,
    /// `[lower, upper)`, from the start (`>=`) or after a key (`>`), at most `?` rows.
    pub scan_from: String,
    pub scan_after: String,
    pub scan_from_to: String,
    pub scan_after_to: String,
    pub last_in: String,
    pub delete_range: String,
    pub clear: String,
    /// Multi-row forms, `[i]` for 2^i rows (i ≤ [`MAX_ROWS_LOG2`]): few distinct statements
    /// to prepare, few round trips per write transaction.
    pub put_many: Vec<String>,
    pub delete_many: Vec<String>,
    pub get_many: Vec<String>,
}

/// The most rows one statement writes or reads by key.
const MAX_ROWS: usize = 256;

impl Dialect {
    /// How `n` rows are split into statements, each `(rows, placeholders, statement)`: the
    /// statement takes the next `rows` rows and has room for `placeholders` rows; the room
    /// left repeats the last row (writing or deleting a row twice in one statement is the
    /// same as once). MySQL prepares every statement of a write transaction beforehand (see
    /// [`Dialect::write_statements`]), so it gets a few fixed sizes (2^i rows, padded); the
    /// others prepare on first use and get one statement of exactly the rows (up to
    /// [`MAX_ROWS`]).
    pub fn rows_statements(
        &self,
        fam: Family,
        op: RowsOp,
        n: usize,
    ) -> Vec<(usize, usize, std::borrow::Cow<'_, str>)> {
        let f = self.family(fam);
        let fixed = match op {
            RowsOp::Put => &f.put_many,
            RowsOp::Delete => &f.delete_many,
        };
        if self.kind == Kind::MySql {
            // One round trip per 2^MAX_ROWS_LOG2 rows costs less than the padding.
            return (0..n)
                .step_by(1 << MAX_ROWS_LOG2)
                .map(|at| {
                    let rows = (n - at).min(1 << MAX_ROWS_LOG2);
                    let log = rows.next_power_of_two().trailing_zeros() as usize;
                    (rows, 1 << log, fixed[log].as_str().into())
                })
                .collect();
        }
        let t = table(fam);
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let rows = left.min(MAX_ROWS);
            left -= rows;
            let sql = if rows.is_power_of_two() && rows.trailing_zeros() as usize <= MAX_ROWS_LOG2 {
                fixed[rows.trailing_zeros() as usize].as_str().into()
            } else {
                placeholders(self.kind, &op.sql(self.kind, t, rows)).into()
            };
            out.push((rows, rows, sql));
        }
        out
    }
}

/// What a multi-row statement does.
#[derive(Debug, Clone, Copy)]
pub enum RowsOp {
    Put,
    Delete,
}

impl RowsOp {
    /// The statement for `rows` rows of table `t`, with `?` placeholders.
    fn sql(self, kind: Kind, t: &str, rows: usize) -> String {
        let values = match self {
            RowsOp::Put => vec!["(?, ?)"; rows].join(", "),
            RowsOp::Delete => key_list(rows),
        };
        self.with_values(kind, t, &values)
    }

    /// The statement with its rows written out: `values` is `(k, v), …` for a put, `k, …`
    /// for a delete.
    fn with_values(self, kind: Kind, t: &str, values: &str) -> String {
        match self {
            RowsOp::Put => match kind {
                Kind::MySql => {
                    format!("INSERT INTO {t} (k, v) VALUES {values} ON DUPLICATE KEY UPDATE v = VALUES(v)")
                }
                _ => format!(
                    "INSERT INTO {t} (k, v) VALUES {values} ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
                ),
            },
            RowsOp::Delete => format!("DELETE FROM {t} WHERE k IN ({values})"),
        }
    }
}

impl Dialect {
    /// Append `bytes` as a literal of the key and value columns' type. Hex digits only, so
    /// nothing in it is ever read as SQL (and PostgreSQL's `E''` reads the same whatever
    /// `standard_conforming_strings` says).
    pub fn push_literal(&self, out: &mut String, bytes: &[u8]) {
        let (open, close) = match self.kind {
            Kind::Postgres => ("E'\\\\x", "'::bytea"),
            Kind::MySql | Kind::Sqlite => ("X'", "'"),
        };
        out.reserve(open.len() + 2 * bytes.len() + close.len());
        out.push_str(open);
        out.push_str(&hex::encode(bytes));
        out.push_str(close);
    }

    /// A multi-row statement of `fam` with its rows written out as literals (sent as text,
    /// several statements in one round trip). `rows`: key and value (a put) or key only.
    pub fn rows_text<'a>(
        &self,
        fam: Family,
        op: RowsOp,
        rows: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> String {
        op.with_values(self.kind, table(fam), &self.values_text(op, rows))
    }

    /// The rows written out as literals, as `op`'s statement lists them: `(k, v), …` for a
    /// put, `k, …` for a delete (and for a key list).
    fn values_text<'a>(
        &self,
        op: RowsOp,
        rows: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> String {
        let mut values = String::new();
        for (i, (k, v)) in rows.into_iter().enumerate() {
            if i > 0 {
                values.push_str(", ");
            }
            match op {
                RowsOp::Put => {
                    values.push('(');
                    self.push_literal(&mut values, k);
                    values.push_str(", ");
                    self.push_literal(&mut values, v.unwrap_or_default());
                    values.push(')');
                }
                RowsOp::Delete => self.push_literal(&mut values, k),
            }
        }
        values
    }

    /// The rows of `fam` whose keys are in `keys`, written out as literals, each row
    /// `(tag, key, value)`: several such reads go in one round trip and the tag tells them
    /// apart.
    pub fn get_many_text(&self, fam: Family, tag: &str, keys: &[&[u8]]) -> String {
        let list = self.values_text(RowsOp::Delete, keys.iter().map(|k| (*k, None)));
        let key = if self.hex_keys { "HEX(k)" } else { "k" };
        format!("SELECT '{tag}', {key}, v FROM {} WHERE k IN ({list})", table(fam))
    }

    /// Delete the rows of `fam` from `start` (inclusive) to `end` (exclusive), as text.
    pub fn delete_range_text(&self, fam: Family, start: &[u8], end: &[u8]) -> String {
        let mut out = format!("DELETE FROM {} WHERE k >= ", table(fam));
        self.push_literal(&mut out, start);
        out.push_str(" AND k < ");
        self.push_literal(&mut out, end);
        out
    }
}

fn key_list(rows: usize) -> String {
    vec!["?"; rows].join(", ")
}

/// The largest multi-row statement has 2^this rows.
pub const MAX_ROWS_LOG2: usize = 7;

/// Everything the adapter says to one kind of database.
#[derive(Debug, Clone)]
pub struct Dialect {
    pub kind: Kind,
    families: Vec<FamilySql>,
    /// Keys come back hex-encoded (MySQL reports `VARBINARY` as text to the driver).
    pub hex_keys: bool,
    /// Statements that open the single writer's transaction, in order; the last one takes
    /// the revision lock.
    pub begin_write: Vec<String>,
    /// Statements that open a read-only transaction seeing one snapshot.
    pub begin_snapshot: Vec<String>,
    /// The database's clock in milliseconds since the Unix epoch, as an SQL expression.
    pub now_ms: &'static str,
    /// Upsert of a lease's deadline: (id, ttl seconds) → deadline now + ttl.
    pub lease_deadline_put: String,
    /// Renew a lease not yet expired: (ttl-from-row) … where id = ?.
    pub lease_renew: String,
    pub lease_deadline_get: String,
    pub lease_deadline_lock: String,
    pub lease_deadline_delete: String,
    pub lease_expired: String,
    /// Give every lease at least its full TTL from now (a cluster starting from nothing
    /// alive, as etcd's leader extends leases when it takes over).
    pub lease_extend_all: String,
    pub member_heartbeat: String,
    pub members_live: String,
    pub members_forget: String,
    pub member_leave: String,
    pub token_put: String,
    pub tokens_since: String,
    pub tokens_forget: String,
    pub alarm_put: String,
    pub alarm_delete: String,
    pub alarms_all: String,
    /// Wakes the other members after a write commits (PostgreSQL only).
    pub notify: Option<String>,
    pub size: String,
    pub defragment: Vec<String>,
}

/// PostgreSQL's LISTEN channel for new revisions.
pub const NOTIFY_CHANNEL: &str = "cairn_revision";

fn table(fam: Family) -> &'static str {
    match fam {
        Family::Kv => "cairn_kv",
        Family::History => "cairn_history",
        Family::Events => "cairn_events",
        Family::Meta => "cairn_meta",
        Family::Leases => "cairn_leases",
        Family::LeaseKeys => "cairn_lease_keys",
    }
}

impl Dialect {
    pub fn new(kind: Kind) -> Dialect {
        let key = if kind == Kind::MySql { "HEX(k)" } else { "k" };
        let upsert = |t: &str, cols: &str, vals: &str, update: &str| match kind {
            Kind::MySql => {
                format!("INSERT INTO {t} ({cols}) VALUES ({vals}) ON DUPLICATE KEY UPDATE {update}")
            }
            _ => format!(
                "INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT ({}) DO UPDATE SET {update}",
                cols.split(',').next().unwrap_or_default()
            ),
        };
        let new_value = |col: &str| match kind {
            Kind::MySql => format!("{col} = VALUES({col})"),
            _ => format!("{col} = EXCLUDED.{col}"),
        };
        let families = Family::ALL
            .iter()
            .map(|&fam| {
                let t = table(fam);
                let sizes = || (0..=MAX_ROWS_LOG2).map(|i| 1usize << i);
                FamilySql {
                    put_many: sizes().map(|n| RowsOp::Put.sql(kind, t, n)).collect(),
                    delete_many: sizes().map(|n| RowsOp::Delete.sql(kind, t, n)).collect(),
                    get_many: sizes()
                        .map(|n| format!("SELECT {key}, v FROM {t} WHERE k IN ({})", key_list(n)))
                        .collect(),
                    get: format!("SELECT v FROM {t} WHERE k = ?"),
                    scan_from: format!("SELECT {key}, v FROM {t} WHERE k >= ? ORDER BY k LIMIT ?"),
                    scan_after: format!("SELECT {key}, v FROM {t} WHERE k > ? ORDER BY k LIMIT ?"),
                    scan_from_to: format!(
                        "SELECT {key}, v FROM {t} WHERE k >= ? AND k < ? ORDER BY k LIMIT ?"
                    ),
                    scan_after_to: format!(
                        "SELECT {key}, v FROM {t} WHERE k > ? AND k < ? ORDER BY k LIMIT ?"
                    ),
                    last_in: format!(
                        "SELECT {key}, v FROM {t} WHERE k >= ? AND k < ? ORDER BY k DESC LIMIT 1"
                    ),
                    delete_range: format!("DELETE FROM {t} WHERE k >= ? AND k < ?"),
                    clear: format!("DELETE FROM {t}"),
                }
            })
            .collect();
        let now_ms = match kind {
            Kind::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            // The session's time zone is UTC (set at connect).
            Kind::MySql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
            Kind::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        };
        let greatest = if kind == Kind::Sqlite { "MAX" } else { "GREATEST" };
        // A write, not a locking read: Galera certifies write sets only, so two nodes'
        // `SELECT … FOR UPDATE` would not exclude each other (two writers would both take
        // the next revision); two updates of one row conflict, and the later one is retried.
        let lock_row = "UPDATE cairn_lock SET n = n + 1 WHERE id = 1".to_string();
        let (begin_write, begin_snapshot) = match kind {
            Kind::Postgres => (
                vec!["BEGIN ISOLATION LEVEL READ COMMITTED".into(), lock_row],
                vec!["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".into()],
            ),
            Kind::MySql => (
                vec![
                    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED".into(),
                    "START TRANSACTION".into(),
                    lock_row,
                ],
                vec![
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ".into(),
                    "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY".into(),
                ],
            ),
            // IMMEDIATE takes the database's write lock at once: the one serialising lock.
            // A deferred transaction sees one snapshot from its first read (WAL mode).
            Kind::Sqlite => (vec!["BEGIN IMMEDIATE".into()], vec!["BEGIN DEFERRED".into()]),
        };
        let for_update = if kind == Kind::Sqlite { "" } else { " FOR UPDATE" };
        let d = Dialect {
            kind,
            families,
            hex_keys: kind == Kind::MySql,
            begin_write,
            begin_snapshot,
            now_ms,
            lease_deadline_put: upsert(
                "cairn_lease_deadlines",
                "id, ttl, expires_ms",
                &format!("?, ?, {now_ms} + ? * 1000"),
                &[new_value("ttl"), new_value("expires_ms")].join(", "),
            ),
            lease_renew: format!(
                "UPDATE cairn_lease_deadlines SET expires_ms = {now_ms} + ttl * 1000 WHERE id = ? AND expires_ms >= {now_ms}"
            ),
            lease_deadline_get: format!(
                "SELECT ttl, expires_ms - {now_ms} FROM cairn_lease_deadlines WHERE id = ?"
            ),
            lease_deadline_lock: format!(
                "SELECT expires_ms - {now_ms} FROM cairn_lease_deadlines WHERE id = ?{for_update}"
            ),
            lease_deadline_delete: "DELETE FROM cairn_lease_deadlines WHERE id = ?".into(),
            lease_expired: format!(
                "SELECT id FROM cairn_lease_deadlines WHERE expires_ms < {now_ms} ORDER BY expires_ms LIMIT ?"
            ),
            lease_extend_all: format!(
                "UPDATE cairn_lease_deadlines SET expires_ms = {greatest}(expires_ms, {now_ms} + ttl * 1000)"
            ),
            member_heartbeat: upsert(
                "cairn_members",
                "id, name, client_urls, version, heartbeat_ms",
                &format!("?, ?, ?, ?, {now_ms}"),
                &["name", "client_urls", "version", "heartbeat_ms"].map(new_value).join(", "),
            ),
            members_live: format!(
                "SELECT id, name, client_urls FROM cairn_members WHERE heartbeat_ms >= {now_ms} - ? ORDER BY id"
            ),
            members_forget: format!("DELETE FROM cairn_members WHERE heartbeat_ms < {now_ms} - ?"),
            member_leave: "DELETE FROM cairn_members WHERE id = ?".into(),
            token_put: format!("INSERT INTO cairn_tokens (token, username, issued_ms) VALUES (?, ?, {now_ms})"),
            tokens_since: format!(
                "SELECT token, username FROM cairn_tokens WHERE issued_ms >= ? AND issued_ms >= {now_ms} - ?"
            ),
            tokens_forget: format!("DELETE FROM cairn_tokens WHERE issued_ms < {now_ms} - ?"),
            alarm_put: match kind {
                Kind::MySql => format!("INSERT IGNORE INTO cairn_alarms (member_id, alarm, raised_ms) VALUES (?, ?, {now_ms})"),
                _ => format!(
                    "INSERT INTO cairn_alarms (member_id, alarm, raised_ms) VALUES (?, ?, {now_ms}) \
                     ON CONFLICT (member_id, alarm) DO NOTHING"
                ),
            },
            alarm_delete: "DELETE FROM cairn_alarms WHERE member_id = ? AND alarm = ?".into(),
            alarms_all: "SELECT member_id, alarm FROM cairn_alarms ORDER BY member_id, alarm".into(),
            notify: (kind == Kind::Postgres).then(|| format!("SELECT pg_notify('{NOTIFY_CHANNEL}', '')")),
            size: match kind {
                Kind::Postgres => "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) FROM pg_class c \
                     WHERE c.relname LIKE 'cairn\\_%' AND c.relkind = 'r' AND pg_table_is_visible(c.oid)"
                    .into(),
                Kind::MySql => "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) \
                     FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'cairn\\_%'"
                    .into(),
                Kind::Sqlite => "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()".into(),
            },
            defragment: match kind {
                Kind::Postgres => Family::ALL.iter().map(|&f| format!("VACUUM {}", table(f))).collect(),
                Kind::MySql => Family::ALL.iter().map(|&f| format!("OPTIMIZE TABLE {}", table(f))).collect(),
                Kind::Sqlite => vec!["VACUUM".into()],
            },
        };
        d.with_placeholders()
    }

    /// Every parameterised statement a write transaction may run. On MySQL they are
    /// prepared when a connection opens, never inside a transaction: MariaDB with Galera
    /// can lose a certification abort that arrives while a statement is being prepared, and
    /// then runs the transaction's later statements in autocommit (seen in tests: a write
    /// the adapter retried had partly committed).
    pub fn write_statements(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for f in &self.families {
            out.extend(
                [
                    &f.get,
                    &f.scan_from,
                    &f.scan_after,
                    &f.scan_from_to,
                    &f.scan_after_to,
                    &f.last_in,
                    &f.delete_range,
                ]
                .map(|s| s.as_str()),
            );
            out.extend(f.put_many.iter().chain(&f.delete_many).map(String::as_str));
        }
        for fam in [Family::Kv, Family::Meta] {
            out.extend(self.family(fam).get_many.iter().map(String::as_str));
        }
        out.extend(
            [&self.lease_deadline_put, &self.lease_deadline_lock, &self.lease_deadline_delete]
                .map(|s| s.as_str()),
        );
        out
    }

    pub fn family(&self, fam: Family) -> &FamilySql {
        &self.families[fam as usize]
    }

    /// The tables, created when missing (version [`SCHEMA_VERSION`]).
    pub fn create_tables(&self) -> Vec<String> {
        let (key, blob, big, text, suffix) = match self.kind {
            // InnoDB's longest index key is 3072 bytes; keys compare as bytes (binary).
            Kind::MySql => ("VARBINARY(3072)", "LONGBLOB", "BIGINT", "VARCHAR(255)", " ENGINE=InnoDB"),
            Kind::Postgres => ("BYTEA", "BYTEA", "BIGINT", "TEXT", ""),
            Kind::Sqlite => ("BLOB", "BLOB", "INTEGER", "TEXT", ""),
        };
        let mut sql: Vec<String> = Family::ALL
            .iter()
            .map(|&f| {
                format!(
                    "CREATE TABLE IF NOT EXISTS {} (k {key} NOT NULL PRIMARY KEY, v {blob} NOT NULL){suffix}",
                    table(f)
                )
            })
            .collect();
        sql.extend([
            format!("CREATE TABLE IF NOT EXISTS cairn_lock (id {big} NOT NULL PRIMARY KEY, n {big} NOT NULL DEFAULT 0){suffix}"),
            format!(
                "CREATE TABLE IF NOT EXISTS cairn_lease_deadlines (id {big} NOT NULL PRIMARY KEY, ttl {big} NOT NULL, \
                 expires_ms {big} NOT NULL){suffix}"
            ),
            "CREATE INDEX IF NOT EXISTS cairn_lease_deadlines_expiry ON cairn_lease_deadlines (expires_ms)".into(),
            format!(
                "CREATE TABLE IF NOT EXISTS cairn_members (id {big} NOT NULL PRIMARY KEY, name {text} NOT NULL, \
                 client_urls {text} NOT NULL, version {text} NOT NULL, heartbeat_ms {big} NOT NULL){suffix}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS cairn_tokens (token {text} NOT NULL PRIMARY KEY, username {text} NOT NULL, \
                 issued_ms {big} NOT NULL){suffix}"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS cairn_alarms (member_id {big} NOT NULL, alarm {big} NOT NULL, \
                 raised_ms {big} NOT NULL, PRIMARY KEY (member_id, alarm)){suffix}"
            ),
        ]);
        sql
    }

    /// PostgreSQL numbers its placeholders.
    fn with_placeholders(mut self) -> Dialect {
        if self.kind != Kind::Postgres {
            return self;
        }
        let number = |s: &mut String| *s = placeholders(Kind::Postgres, s);
        for f in &mut self.families {
            for s in [
                &mut f.get,
                &mut f.scan_from,
                &mut f.scan_after,
                &mut f.scan_from_to,
                &mut f.scan_after_to,
                &mut f.last_in,
                &mut f.delete_range,
            ] {
                number(s);
            }
            for s in f.put_many.iter_mut().chain(&mut f.delete_many).chain(&mut f.get_many) {
                number(s);
            }
        }
        for s in [
            &mut self.lease_deadline_put,
            &mut self.lease_renew,
            &mut self.lease_deadline_get,
            &mut self.lease_deadline_lock,
            &mut self.lease_deadline_delete,
            &mut self.lease_expired,
            &mut self.member_heartbeat,
            &mut self.members_live,
            &mut self.members_forget,
            &mut self.member_leave,
            &mut self.token_put,
            &mut self.tokens_since,
            &mut self.tokens_forget,
            &mut self.alarm_put,
            &mut self.alarm_delete,
        ] {
            number(s);
        }
        self
    }
}

/// Turn `?` placeholders into the database's own (for statements made outside [`Dialect`]).
pub fn placeholders(kind: Kind, sql: &str) -> String {
    if kind != Kind::Postgres {
        return sql.to_string();
    }
    let mut out = String::new();
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_exact_statements_except_on_mysql() {
        let pg = Dialect::new(Kind::Postgres);
        let split = pg.rows_statements(Family::Kv, RowsOp::Put, 300);
        assert_eq!(split.iter().map(|(n, room, _)| (*n, *room)).collect::<Vec<_>>(), [(256, 256), (44, 44)]);
        assert!(
            split[1].2.ends_with("($87, $88) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"),
            "{}",
            split[1].2
        );
        let delete = pg.rows_statements(Family::History, RowsOp::Delete, 3);
        assert_eq!(delete[0].2, "DELETE FROM cairn_history WHERE k IN ($1, $2, $3)");
        let my = Dialect::new(Kind::MySql);
        let rooms = |n| {
            my.rows_statements(Family::Kv, RowsOp::Put, n)
                .iter()
                .map(|(rows, room, _)| (*rows, *room))
                .collect::<Vec<_>>()
        };
        assert_eq!(rooms(0), []);
        assert_eq!(rooms(1), [(1, 1)]);
        assert_eq!(rooms(7), [(7, 8)]);
        assert_eq!(rooms(128), [(128, 128)]);
        assert_eq!(rooms(300), [(128, 128), (128, 128), (44, 64)]);
        let split = my.rows_statements(Family::Kv, RowsOp::Put, 5);
        assert_eq!(split[0].2, my.family(Family::Kv).put_many[3]);
    }

    #[test]
    fn multi_row_statements_number_their_placeholders() {
        let pg = Dialect::new(Kind::Postgres);
        let kv = pg.family(Family::Kv);
        assert_eq!(
            kv.put_many[1],
            "INSERT INTO cairn_kv (k, v) VALUES ($1, $2), ($3, $4) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        );
        assert_eq!(kv.delete_many[2], "DELETE FROM cairn_kv WHERE k IN ($1, $2, $3, $4)");
        assert_eq!(kv.get_many[0], "SELECT k, v FROM cairn_kv WHERE k IN ($1)");
        assert_eq!(kv.put_many.len(), MAX_ROWS_LOG2 + 1);
        let my = Dialect::new(Kind::MySql);
        assert_eq!(
            my.family(Family::History).put_many[1],
            "INSERT INTO cairn_history (k, v) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)"
        );
        assert_eq!(my.family(Family::Kv).get_many[0], "SELECT HEX(k), v FROM cairn_kv WHERE k IN (?)");
    }
}

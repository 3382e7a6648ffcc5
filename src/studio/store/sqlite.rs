//! The default database: one SQLite file (WAL) next to the outputs.
use super::{class_name, Backend, Batch, DbResult, StoredEvent};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

pub(super) struct Sqlite {
    conn: Connection,
}

fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Sqlite {
    pub(super) fn open(path: &Path) -> DbResult<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create its folder: {e}"))?;
        }
        let conn = Connection::open(path).map_err(msg)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS jobs (
                 job_id TEXT PRIMARY KEY, service TEXT NOT NULL, tag TEXT, status TEXT NOT NULL,
                 progress REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, metadata TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
             CREATE TABLE IF NOT EXISTS events (
                 offset INTEGER PRIMARY KEY, job_id TEXT, class TEXT NOT NULL, body TEXT NOT NULL);",
        )
        .map_err(|e| format!("cannot prepare its tables: {e}"))?;
        Ok(Sqlite { conn })
    }

    fn set_meta(&self, pairs: &[(&str, &str)]) -> rusqlite::Result<()> {
        for (k, v) in pairs {
            self.conn
                .execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)", [k, v])?;
        }
        Ok(())
    }
}

impl Backend for Sqlite {
    fn meta(&mut self, key: &str) -> DbResult<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(msg)
    }

    fn max_offset(&mut self) -> DbResult<u64> {
        let max: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(offset), 0) FROM events", [], |r| r.get(0))
            .map_err(msg)?;
        Ok(max.max(0) as u64)
    }

    fn jobs(&mut self, finished: usize) -> DbResult<Vec<String>> {
        // Unfinished jobs always, and the newest finished ones.
        let mut stmt = self
            .conn
            .prepare(
                "SELECT metadata FROM jobs WHERE status NOT IN ('completed','failed','cancelled')
                 UNION ALL
                 SELECT metadata FROM (SELECT metadata FROM jobs WHERE status IN ('completed','failed','cancelled')
                                       ORDER BY created_at DESC LIMIT ?1)",
            )
            .map_err(msg)?;
        let rows = stmt
            .query_map([finished as i64], |r| r.get::<_, String>(0))
            .map_err(msg)?;
        Ok(rows.flatten().collect())
    }

    fn events_after(&mut self, offset: u64) -> DbResult<Vec<StoredEvent>> {
        let mut stmt = self
            .conn
            .prepare("SELECT offset, job_id, class, body FROM events WHERE offset > ?1 ORDER BY offset")
            .map_err(msg)?;
        let rows = stmt
            .query_map([offset as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?.max(0) as u64,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(msg)?;
        Ok(rows.flatten().collect())
    }

    fn begin_run(&mut self, epoch: &str) -> DbResult<()> {
        self.conn.execute_batch("BEGIN").map_err(msg)?;
        let r = self.set_meta(&[("clean_shutdown", "0"), ("epoch", epoch)]);
        match r {
            Ok(()) => self.conn.execute_batch("COMMIT").map_err(msg),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(msg(e))
            }
        }
    }

    fn write(&mut self, batch: &Batch) -> DbResult<()> {
        let tx = self.conn.transaction().map_err(msg)?;
        {
            let mut job = tx
                .prepare_cached(
                    "INSERT INTO jobs(job_id, service, tag, status, progress, created_at, updated_at, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(job_id) DO UPDATE SET status = excluded.status, progress = excluded.progress,
                       updated_at = excluded.updated_at, metadata = excluded.metadata, tag = excluded.tag",
                )
                .map_err(msg)?;
            for v in batch.jobs.values() {
                let meta = serde_json::to_string(v).unwrap_or_default();
                job.execute(params![
                    v.job_id,
                    v.service,
                    v.tag,
                    v.state.as_str(),
                    v.progress,
                    v.created_at,
                    v.updated_at,
                    meta
                ])
                .map_err(msg)?;
            }
            let mut ev = tx
                .prepare_cached("INSERT OR REPLACE INTO events(offset, job_id, class, body) VALUES (?1, ?2, ?3, ?4)")
                .map_err(msg)?;
            for (offset, job, class, text) in &batch.events {
                ev.execute(params![*offset as i64, job, class_name(*class), &**text])
                    .map_err(msg)?;
            }
            if let Some(keep_from) = batch.keep_from() {
                tx.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_offset', ?1)",
                    [batch.next_offset.to_string()],
                )
                .map_err(msg)?;
                tx.execute("DELETE FROM events WHERE offset < ?1", [keep_from as i64])
                    .map_err(msg)?;
            }
        }
        tx.commit().map_err(msg)
    }

    fn end_run(&mut self) -> DbResult<()> {
        self.set_meta(&[("clean_shutdown", "1")]).map_err(msg)
    }
}

//! PostgreSQL (`--database postgresql://user:password@host:port/db`): the brief's `jobs` table with the job as
//! JSON in `metadata`, plus the stream's history and a few settings. tokio-postgres on a current-thread runtime
//! of the writer thread's own: the connection is driven only while the writer works, and nothing here depends on
//! the hub's runtime (which stops before the last batch is written). A lost connection is made again on the next
//! write; the password is kept out of every message.
use super::{class_name, Backend, Batch, DbResult, StoredEvent};
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls};

/// Any single database call may take this long before it counts as failed (and is retried).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS studio_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, service TEXT NOT NULL, tag TEXT, status TEXT NOT NULL,
        progress DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, metadata JSONB NOT NULL);
    CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
    CREATE TABLE IF NOT EXISTS studio_events (
        stream_offset BIGINT PRIMARY KEY, job_id TEXT, class TEXT NOT NULL, body TEXT NOT NULL);";

pub(super) struct Postgres {
    rt: tokio::runtime::Runtime,
    config: Config,
    client: Option<Client>,
    /// The password, so that no message can carry it (a server or driver may quote what it was given).
    secret: Option<String>,
}

impl Postgres {
    pub(super) fn open(url: &str) -> DbResult<Postgres> {
        let mut config: Config = url
            .parse()
            .map_err(|_| "not a valid postgresql:// URL (postgresql://user:password@host:port/database)".to_string())?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name("director-link studio");
        let secret = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start its runtime: {e}"))?;
        let mut pg = Postgres {
            rt,
            config,
            client: None,
            secret,
        };
        pg.client()?;
        Ok(pg)
    }

    fn scrub(&self, e: impl std::fmt::Display) -> String {
        let text = e.to_string();
        match &self.secret {
            Some(s) => text.replace(s.as_str(), "***"),
            None => text,
        }
    }

    /// The connection, made (again) when there is none or it was lost.
    fn client(&mut self) -> DbResult<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let config = self.config.clone();
            let made = self.rt.block_on(async move {
                let (client, connection) = config.connect(NoTls).await?;
                // Driven by this runtime whenever the writer waits on a call; it ends when the server goes.
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        log::debug!("studio database: the PostgreSQL connection ended: {e}");
                    }
                });
                client.batch_execute(SCHEMA).await?;
                Ok::<_, tokio_postgres::Error>(client)
            });
            let client = made.map_err(|e| self.scrub(e))?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| "no connection".to_string())
    }

    /// Runs one call with a bound on its time; a failed call drops a connection that is gone.
    fn call<T>(
        &mut self,
        f: impl for<'c> FnOnce(&'c mut Client) -> futures_util::future::BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    ) -> DbResult<T> {
        self.client()?;
        let Postgres { rt, client, .. } = self;
        let Some(c) = client.as_mut() else {
            return Err("no connection".to_string());
        };
        let call = f(c);
        // The timer belongs to this runtime: made inside it.
        let outcome = rt.block_on(async move { tokio::time::timeout(CALL_TIMEOUT, call).await });
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if self.client.as_ref().is_some_and(Client::is_closed) {
                    self.client = None;
                }
                Err(self.scrub(e))
            }
            Err(_) => {
                // A call that hangs leaves the connection in an unknown state: start over.
                self.client = None;
                Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs()))
            }
        }
    }
}

fn meta_upsert() -> &'static str {
    "INSERT INTO studio_meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
}

impl Backend for Postgres {
    fn meta(&mut self, key: &str) -> DbResult<Option<String>> {
        let key = key.to_string();
        let row = self.call(move |c| {
            Box::pin(async move {
                c.query_opt("SELECT value FROM studio_meta WHERE key = $1", &[&key])
                    .await
            })
        })?;
        row.map(|r| r.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| self.scrub(e))
    }

    fn max_offset(&mut self) -> DbResult<u64> {
        let row = self.call(|c| {
            Box::pin(async move {
                c.query_one("SELECT COALESCE(MAX(stream_offset), 0)::BIGINT FROM studio_events", &[])
                    .await
            })
        })?;
        let max: i64 = row.try_get(0).map_err(|e| self.scrub(e))?;
        Ok(max.max(0) as u64)
    }

    fn jobs(&mut self, finished: usize) -> DbResult<Vec<String>> {
        let limit = finished as i64;
        let rows = self.call(move |c| {
            Box::pin(async move {
                c.query(
                    "SELECT metadata::TEXT FROM jobs WHERE status NOT IN ('completed','failed','cancelled')
                     UNION ALL
                     (SELECT metadata::TEXT FROM jobs WHERE status IN ('completed','failed','cancelled')
                      ORDER BY created_at DESC LIMIT $1)",
                    &[&limit],
                )
                .await
            })
        })?;
        Ok(rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()).collect())
    }

    fn events_after(&mut self, offset: u64) -> DbResult<Vec<StoredEvent>> {
        let from = offset as i64;
        let rows = self.call(move |c| {
            Box::pin(async move {
                c.query(
                    "SELECT stream_offset, job_id, class, body FROM studio_events WHERE stream_offset > $1
                     ORDER BY stream_offset",
                    &[&from],
                )
                .await
            })
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some((
                    r.try_get::<_, i64>(0).ok()?.max(0) as u64,
                    r.try_get::<_, Option<String>>(1).ok()?,
                    r.try_get::<_, String>(2).ok()?,
                    r.try_get::<_, String>(3).ok()?,
                ))
            })
            .collect())
    }

    fn begin_run(&mut self, epoch: &str) -> DbResult<()> {
        let epoch = epoch.to_string();
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.execute(meta_upsert(), &[&"clean_shutdown", &"0"]).await?;
                tx.execute(meta_upsert(), &[&"epoch", &epoch]).await?;
                tx.commit().await
            })
        })
    }

    fn write(&mut self, batch: &Batch) -> DbResult<()> {
        // One statement per table for the whole batch (arrays unnested server-side), in one transaction.
        // Owned copies: the call's future outlives no borrow of the batch.
        let jobs: Vec<_> = batch.jobs.values().collect();
        let ids: Vec<String> = jobs.iter().map(|v| v.job_id.clone()).collect();
        let services: Vec<String> = jobs.iter().map(|v| v.service.clone()).collect();
        let tags: Vec<Option<String>> = jobs.iter().map(|v| v.tag.clone()).collect();
        let states: Vec<&'static str> = jobs.iter().map(|v| v.state.as_str()).collect();
        let progress: Vec<f64> = jobs.iter().map(|v| v.progress).collect();
        let created: Vec<f64> = jobs.iter().map(|v| v.created_at).collect();
        let updated: Vec<f64> = jobs.iter().map(|v| v.updated_at).collect();
        let metas: Vec<String> = jobs
            .iter()
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .collect();
        let offsets: Vec<i64> = batch.events.iter().map(|e| e.0 as i64).collect();
        let event_jobs: Vec<Option<String>> = batch.events.iter().map(|e| e.1.clone()).collect();
        let classes: Vec<&'static str> = batch.events.iter().map(|e| class_name(e.2)).collect();
        let bodies: Vec<String> = batch.events.iter().map(|e| e.3.to_string()).collect();
        let next = batch
            .keep_from()
            .map(|keep| (batch.next_offset.to_string(), keep as i64));
        self.call(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if !ids.is_empty() {
                    tx.execute(
                        "INSERT INTO jobs(job_id, service, tag, status, progress, created_at, updated_at, metadata)
                         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::FLOAT8[],
                                              $6::FLOAT8[], $7::FLOAT8[], $8::TEXT[]::JSONB[])
                         ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, progress = excluded.progress,
                           updated_at = excluded.updated_at, metadata = excluded.metadata, tag = excluded.tag",
                        &[&ids, &services, &tags, &states, &progress, &created, &updated, &metas],
                    )
                    .await?;
                }
                if !offsets.is_empty() {
                    tx.execute(
                        "INSERT INTO studio_events(stream_offset, job_id, class, body)
                         SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[])
                         ON CONFLICT (stream_offset) DO UPDATE SET job_id = excluded.job_id,
                           class = excluded.class, body = excluded.body",
                        &[&offsets, &event_jobs, &classes, &bodies],
                    )
                    .await?;
                }
                if let Some((next_offset, keep_from)) = &next {
                    tx.execute(meta_upsert(), &[&"next_offset", next_offset]).await?;
                    tx.execute("DELETE FROM studio_events WHERE stream_offset < $1", &[keep_from])
                        .await?;
                }
                tx.commit().await
            })
        })
    }

    fn end_run(&mut self) -> DbResult<()> {
        self.call(|c| Box::pin(async move { c.execute(meta_upsert(), &[&"clean_shutdown", &"1"]).await.map(|_| ()) }))
    }
}

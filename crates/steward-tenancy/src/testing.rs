//! Throwaway PostgreSQL databases for tests (feature `testing`).
//!
//! `./scripts/test` makes sure a PostgreSQL server runs and exports its superuser URL as
//! `STEWARD_TEST_POSTGRES_URL` (a local one on 127.0.0.1:5432, or a throwaway server it starts).
//! Tests never skip when it is missing: they fail and say to run `./scripts/test`.

use sqlx::{Connection as _, Executor as _, PgConnection};

/// The variable naming the PostgreSQL server tests use.
pub const POSTGRES_URL_ENV: &str = "STEWARD_TEST_POSTGRES_URL";
/// Used when the variable is unset (the local server of a development machine).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server URL tests use: `$STEWARD_TEST_POSTGRES_URL`, else [`DEFAULT_POSTGRES_URL`].
#[must_use]
pub fn postgres_url() -> String {
    std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A fresh, empty database on the test server, dropped (with its connections) on drop.
#[derive(Debug)]
pub struct PgTestDb {
    server: String,
    name: String,
    url: String,
}

impl PgTestDb {
    /// Creates `steward_test_<random>`.
    ///
    /// # Panics
    /// When the server cannot be reached: the message says how to get one.
    pub async fn create() -> Self {
        let server = postgres_url();
        let name = format!("steward_test_{:016x}", fastrand::u64(..));
        let mut conn = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {server}: {e}; run ./scripts/test (it starts one) or \
                 set {POSTGRES_URL_ENV}"
            )
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = conn.close().await;
        let url = match server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("{POSTGRES_URL_ENV} must end in /<database>"),
        };
        Self { server, name, url }
    }

    /// Drops the database now, closing every connection to it (a store outage for the server
    /// under test); dropping `self` later is then a no-op.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn drop_database(&self) {
        let mut conn = PgConnection::connect(&self.server).await.expect("reach the test server");
        conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .expect("drop the test database");
        let _ = conn.close().await;
    }

    /// Its URL (`postgres://…/steward_test_…`).
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await; a short-lived runtime on its own thread does it
        #[allow(clippy::disallowed_methods)] // test support, and the thread is joined right here
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&server).await.ok()?;
                conn.execute(sql.as_str()).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}

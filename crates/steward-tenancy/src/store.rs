//! The store of tenants and tokens: sqlx over SQLite (embedded default) or PostgreSQL, one code
//! path through sqlx's `Any` driver. The SQL is portable: `$n` placeholders (sqlx accepts them
//! for SQLite too), BIGINT Unix milliseconds for times, JSON text for structured fields.
//! Migrations are compiled in (`migrations/*.sql`) and run at open.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Executor as _, Row as _};
use steward_config::StoreConfig;

use crate::model::{Labels, QuotaOverrides, Tenant, TenantId, TokenId, TokenInfo};
use crate::{Error, Result};

/// The embedded migrations, in order: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "tenants and tokens", include_str!("../migrations/0001_tenants_and_tokens.sql")),
    (2, "tenant browser allow-list", include_str!("../migrations/0002_tenant_browser_allow.sql")),
];

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A token row with what authentication needs: the stored hash and the owning tenant.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Listed metadata.
    pub info: TokenInfo,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
}

/// A pool of connections to the tenants database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

#[derive(Debug)]
struct Embedded;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, std::result::Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Creates `dir` (and its parents) if missing and makes it private to Steward's user (mode
/// 0700): it holds the tenant database and the generated admin token.
///
/// # Errors
/// The I/O error of creating it or setting its mode.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates `file` if missing with mode 0600, and sets 0600 on an existing one. SQLite gives its
/// `-wal` and `-shm` files the database file's mode, so they are private too.
fn private_file(file: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file)?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
}

impl Store {
    /// Opens the database `config` names (creating the SQLite file, mode 0600, and `data_dir`,
    /// mode 0700, when needed; an existing embedded database and its directory are set to those
    /// modes) and runs the embedded migrations.
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be reached or opened within
    /// `store.connect_timeout`; [`Error::Migrate`] when a migration fails;
    /// [`Error::Internal`] when `data_dir` cannot be created.
    pub async fn open(config: &StoreConfig) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if config.url.is_empty() {
            let file = config.data_dir.join("steward.db");
            private_dir(&config.data_dir)
                .and_then(|()| private_file(&file))
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", file.display())))?;
            (sqlite_url(&file), Backend::Sqlite)
        } else if config.url.starts_with("sqlite:") {
            let url = if config.url.contains('?') {
                config.url.clone()
            } else {
                format!("{}?mode=rwc", config.url)
            };
            (url, Backend::Sqlite)
        } else {
            (config.url.clone(), Backend::Postgres)
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // readers never wait for the writer; persistent in the file
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let migrator = Migrator::new(Embedded).await.map_err(Error::Migrate)?;
        migrator.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Self { pool, backend })
    }

    /// The connection pool (for tools and tests that inspect the tables).
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (waits for checked-out ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Number of tenants.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn count_tenants(&self) -> Result<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tenants").fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Inserts `t`.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when its id is taken (the primary key decides, so of concurrent
    /// inserts of one id exactly one succeeds); [`Error::Store`].
    pub async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO tenants (id, display_name, created_at, updated_at, quota_overrides, \
             browser_endpoint, browser_allow, labels, revision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(t.id.as_str())
        .bind(&t.display_name)
        .bind(millis(t.created_at))
        .bind(millis(t.updated_at))
        .bind(json(&t.quota_overrides)?)
        .bind(t.browser_endpoint.as_deref())
        .bind(json(&t.browser_allow)?)
        .bind(json(&t.labels)?)
        .bind(t.revision)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(Error::AlreadyExists(format!("tenant {}", t.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The tenant `id`, if it exists.
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Internal`] for a row that does not decode.
    pub async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| tenant_from(&r)).transpose()
    }

    /// Up to `limit` tenants with ids after `after`, ordered by id.
    ///
    /// # Errors
    /// As [`Store::tenant`].
    pub async fn tenants(&self, after: Option<&TenantId>, limit: u32) -> Result<Vec<Tenant>> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or("", TenantId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_from).collect()
    }

    /// Writes `t` if the stored revision is still `t.revision - 1` (optimistic concurrency).
    /// Returns whether it was written.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn update_tenant(&self, t: &Tenant) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE tenants SET display_name = $1, updated_at = $2, quota_overrides = $3, \
             browser_endpoint = $4, browser_allow = $5, labels = $6, revision = $7 \
             WHERE id = $8 AND revision = $9",
        )
        .bind(&t.display_name)
        .bind(millis(t.updated_at))
        .bind(json(&t.quota_overrides)?)
        .bind(t.browser_endpoint.as_deref())
        .bind(json(&t.browser_allow)?)
        .bind(json(&t.labels)?)
        .bind(t.revision)
        .bind(t.id.as_str())
        .bind(t.revision - 1)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Deletes tenant `id` and, in the same transaction, its tokens. Returns the ids of the
    /// tokens it had, or `None` when there was no such tenant.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<Option<Vec<TokenId>>> {
        let mut tx = self.pool.begin().await?;
        let tokens: Vec<String> = sqlx::query_scalar("SELECT id FROM tokens WHERE tenant_id = $1")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tokens WHERE tenant_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        tokens.iter().map(|t| TokenId::new(t).map_err(corrupt)).collect::<Result<_>>().map(Some)
    }

    /// Number of tokens of `tenant`.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn count_tokens(&self, tenant: &TenantId) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Inserts a token; only the hash of its secret is written.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the tenant does not exist (the foreign key decides, so a token
    /// cannot outlive a concurrently deleted tenant); [`Error::Store`].
    pub async fn insert_token(&self, info: &TokenInfo, secret_sha256: &str) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO tokens (id, tenant_id, name, secret_sha256, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(info.id.as_str())
        .bind(info.tenant.as_str())
        .bind(&info.name)
        .bind(secret_sha256)
        .bind(millis(info.created_at))
        .bind(info.expires_at.map(millis))
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(Error::NotFound(format!("tenant {}", info.tenant)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The tokens of `tenant`, oldest first, without any secret material.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn tokens(&self, tenant: &TenantId) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, created_at, expires_at FROM tokens \
             WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_info_from).collect()
    }

    /// The token `id` with its hash, for authentication.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, created_at, expires_at, secret_sha256 FROM tokens \
             WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TokenRecord {
                info: token_info_from(&r)?,
                secret_sha256: r.try_get("secret_sha256")?,
            })
        })
        .transpose()
    }

    /// The token `id` with its hash and its tenant, in one round trip (authentication's cache
    /// miss).
    ///
    /// # Errors
    /// [`Error::Store`]; [`Error::Internal`] for a row that does not decode.
    pub async fn token_with_tenant(&self, id: &TokenId) -> Result<Option<(TokenRecord, Tenant)>> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS}, tokens.name AS token_name, \
             tokens.created_at AS token_created_at, tokens.expires_at AS token_expires_at, \
             tokens.secret_sha256 FROM tokens JOIN tenants ON tenants.id = tokens.tenant_id \
             WHERE tokens.id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let tenant = tenant_from(&r)?;
            let expires: Option<i64> = r.try_get("token_expires_at")?;
            let info = TokenInfo {
                id: id.clone(),
                tenant: tenant.id.clone(),
                name: r.try_get("token_name")?,
                created_at: from_millis(r.try_get("token_created_at")?),
                expires_at: expires.map(from_millis),
            };
            Ok((TokenRecord { info, secret_sha256: r.try_get("secret_sha256")? }, tenant))
        })
        .transpose()
    }

    /// Deletes token `id`; returns its tenant, or `None` when there was no such token.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn delete_token(&self, id: &TokenId) -> Result<Option<TenantId>> {
        let mut tx = self.pool.begin().await?;
        let tenant: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM tokens WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM tokens WHERE id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        tenant.map(|t| TenantId::new(&t).map_err(corrupt)).transpose()
    }

    /// The `limit` earliest expiries, earliest first, read from the `expires_at` index (the
    /// purge's deadline queue; no scan of all tokens).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn earliest_expiries(&self, limit: u32) -> Result<Vec<(TokenId, SystemTime)>> {
        let rows = sqlx::query(
            "SELECT id, expires_at FROM tokens WHERE expires_at IS NOT NULL \
             ORDER BY expires_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let at: i64 = r.try_get("expires_at")?;
                Ok((TokenId::new(&id).map_err(corrupt)?, from_millis(at)))
            })
            .collect()
    }

    /// Deletes token `id` if it has expired by `now`; returns whether it did.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn purge_expired(&self, id: &TokenId, now: SystemTime) -> Result<bool> {
        let res = sqlx::query("DELETE FROM tokens WHERE id = $1 AND expires_at <= $2")
            .bind(id.as_str())
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() == 1)
    }
}

/// Qualified, so they can be joined with `tokens`; rows name them without the table.
const TENANT_COLUMNS: &str = "tenants.id, tenants.display_name, tenants.created_at, \
     tenants.updated_at, tenants.quota_overrides, tenants.browser_endpoint, \
     tenants.browser_allow, tenants.labels, tenants.revision";

fn sqlite_url(path: &Path) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!("sqlite://{}?mode=rwc", abs.display())
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("corrupt row: {e}"))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}

fn tenant_from(r: &AnyRow) -> Result<Tenant> {
    let id: String = r.try_get("id")?;
    let overrides: String = r.try_get("quota_overrides")?;
    let labels: String = r.try_get("labels")?;
    let browser_allow: String = r.try_get("browser_allow")?;
    Ok(Tenant {
        id: TenantId::new(&id).map_err(corrupt)?,
        display_name: r.try_get("display_name")?,
        created_at: from_millis(r.try_get("created_at")?),
        updated_at: from_millis(r.try_get("updated_at")?),
        quota_overrides: serde_json::from_str::<QuotaOverrides>(&overrides).map_err(corrupt)?,
        browser_endpoint: r.try_get("browser_endpoint")?,
        browser_allow: serde_json::from_str::<Vec<String>>(&browser_allow).map_err(corrupt)?,
        labels: serde_json::from_str::<Labels>(&labels).map_err(corrupt)?,
        revision: r.try_get("revision")?,
    })
}

fn token_info_from(r: &AnyRow) -> Result<TokenInfo> {
    let id: String = r.try_get("id")?;
    let tenant: String = r.try_get("tenant_id")?;
    let expires: Option<i64> = r.try_get("expires_at")?;
    Ok(TokenInfo {
        id: TokenId::new(&id).map_err(corrupt)?,
        tenant: TenantId::new(&tenant).map_err(corrupt)?,
        name: r.try_get("name")?,
        created_at: from_millis(r.try_get("created_at")?),
        expires_at: expires.map(from_millis),
    })
}

/// Now, truncated to the millisecond the store keeps, so what a call returns equals what a
/// later read returns.
pub(crate) fn now_millis() -> SystemTime {
    from_millis(millis(SystemTime::now()))
}

/// Unix milliseconds of `t` (0 before the epoch, saturating).
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `ms` Unix milliseconds name (the epoch for negative values).
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

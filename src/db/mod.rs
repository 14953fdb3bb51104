//! The live-database target (issue 4): a PostgreSQL database holding the catalog schema of
//! [`schema`], loaded from an export ([`load`]), dumped back to one ([`dump`]), and changed by a
//! bundle under the guards of SPEC §7 ([`apply`]).
//!
//! The database URL (`postgresql://USER:PASSWORD@HOST:PORT/DBNAME`, or `key=value` pairs) never
//! appears in output or errors: messages name the database as `USER@HOST:PORT/DBNAME`, and every
//! error text from the driver is scrubbed of the password before it is shown. How the settings
//! are read (URL, `PG*` variables, `~/.pgpass`) and TLS is negotiated: [`connect`].

pub mod apply;
pub mod connect;
pub mod dump;
mod guarded;
pub mod load;
pub mod schema;

use anyhow::{anyhow, Result};
use connect::{RootCert, SslMode, Tls};
use postgres::{Client, NoTls};
use schema::{Cell, Row, Table, Ty};
use std::str::FromStr;

/// An error from the server or the driver, shown without the password, with the server's
/// SQLSTATE kept so that a caller can tell a deadlock (worth a retry) from the rest.
#[derive(Debug)]
pub struct DbError {
    /// The server's SQLSTATE, when the server answered.
    pub code: Option<postgres::error::SqlState>,
    text: String,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DbError {}

/// True when the server ended a transaction to break a deadlock (or a serialization failure):
/// running the same transaction again is the remedy.
pub fn is_retryable(e: &anyhow::Error) -> bool {
    use postgres::error::SqlState;
    e.chain().any(|c| {
        c.downcast_ref::<DbError>().is_some_and(|d| {
            d.code == Some(SqlState::T_R_DEADLOCK_DETECTED)
                || d.code == Some(SqlState::T_R_SERIALIZATION_FAILURE)
        })
    })
}

/// A database to connect to, with what may be shown of it.
pub struct Database {
    config: postgres::Config,
    tls: Tls,
    shown: String,
    secrets: Vec<String>,
    warnings: Vec<String>,
}

impl Database {
    /// Parses a URL or `key=value` connection string, fills what it leaves out from the `PG*`
    /// variables and the password file as `psql` does ([`connect`]), and prints the warnings
    /// (a password file others may read is ignored) on stderr. Errors never show the password.
    pub fn parse(url: &str) -> Result<Database> {
        let db = Database::parse_with(url, &|k| std::env::var(k).ok())?;
        for w in db.warnings() {
            eprintln!("lookmig: warning: {w}");
        }
        Ok(db)
    }

    /// [`Database::parse`] with the environment looked up by `env`, printing nothing.
    pub fn parse_with(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Database> {
        let guessed = guess_secrets(url);
        let split = connect::prepare(url, env);
        let mut config = postgres::Config::from_str(&split.rest).map_err(|e| {
            anyhow!(
                "the database URL is not valid ({}); expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME",
                scrub(&e.to_string(), &guessed)
            )
        })?;
        let resolved = connect::resolve(&mut config, &split, env)
            .map_err(|e| anyhow!("{}", scrub(&format!("{e:#}"), &guessed)))?;
        let mut secrets = guessed;
        secrets.extend(resolved.secrets);
        if let Some(p) = config.get_password() {
            secrets.push(String::from_utf8_lossy(p).into_owned());
        }
        secrets.retain(|s| !s.is_empty());
        if config.get_application_name().is_none() {
            config.application_name("lookmig");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(30));
        }
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or("?");
        let db = config.get_dbname().unwrap_or(user);
        let shown = format!("{user}@{host}:{port}/{db}");
        Ok(Database {
            config,
            tls: resolved.tls,
            shown,
            secrets,
            warnings: resolved.warnings,
        })
    }

    /// How the database is named in messages (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The TLS settings in force (`sslmode`, `sslrootcert`).
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// What the user should be told about the settings (e.g. an ignored password file).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Connects as libpq would with this `sslmode`: `disable` plain only; `allow` plain, then
    /// TLS if the server rejects that; `prefer` TLS, then plain if the server does not support
    /// TLS, the handshake fails or the server rejects the TLS session; `require`, `verify-ca`
    /// and `verify-full` TLS only. Unix sockets never use TLS (as in libpq).
    pub fn connect(&self) -> Result<Client> {
        let unix = matches!(
            self.config.get_hosts().first(),
            Some(postgres::config::Host::Unix(_))
        );
        let mode = if unix {
            SslMode::Disable
        } else {
            self.tls.mode
        };
        match mode {
            SslMode::Disable => self
                .attempt(false)
                .map_err(|e| self.connect_error(&e, false, None)),
            SslMode::Allow => match self.attempt(false) {
                Ok(c) => Ok(c),
                Err(e) if e.rejected_by_server() => self.attempt(true).map_err(|e2| {
                    self.connect_error(&e2, true, Some(("a first try without TLS", &e)))
                }),
                Err(e) => Err(self.connect_error(&e, false, None)),
            },
            SslMode::Prefer => match self.attempt(true) {
                Ok(c) => Ok(c),
                Err(e) if e.no_tls_on_server() => self
                    .attempt(false)
                    .map_err(|e| self.connect_error(&e, false, None)),
                Err(e) if e.tls_handshake_failed() || e.rejected_by_server() => self
                    .attempt(false)
                    .map_err(|e2| self.connect_error(&e, true, Some(("a retry without TLS", &e2)))),
                Err(e) => Err(self.connect_error(&e, true, None)),
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => self
                .attempt(true)
                .map_err(|e| self.connect_error(&e, true, None)),
        }
    }

    /// One connection attempt, with TLS required or without TLS.
    fn attempt(&self, tls: bool) -> Result<Client, AttemptError> {
        let mut config = self.config.clone();
        if !tls {
            config.ssl_mode(postgres::config::SslMode::Disable);
            return config.connect(NoTls).map_err(AttemptError::Driver);
        }
        config.ssl_mode(postgres::config::SslMode::Require);
        let connector = self.tls.connector().map_err(AttemptError::Setup)?;
        config.connect(connector).map_err(AttemptError::Driver)
    }

    /// The error of a failed connection, with what to do about the usual TLS mistakes;
    /// `other` is an earlier or later attempt that failed too.
    fn connect_error(
        &self,
        e: &AttemptError,
        tls: bool,
        other: Option<(&str, &AttemptError)>,
    ) -> anyhow::Error {
        let mut text = match e {
            AttemptError::Setup(e) => format!("{e:#}"),
            AttemptError::Driver(e) => match (self.advice(e, tls), tls_cause(e)) {
                (Some(advice), Some(cause)) => format!("{advice} (TLS: {cause})"),
                (Some(advice), None) => format!("{advice} ({})", self.describe(e)),
                (None, _) => self.describe(e),
            },
        };
        if let Some((what, o)) = other {
            let o = match o {
                AttemptError::Setup(e) => format!("{e:#}"),
                AttemptError::Driver(e) => self.describe(e),
            };
            text += &format!("; {what} failed too: {o}");
        }
        anyhow!(
            "database {}: cannot connect: {}",
            self.shown,
            scrub(&text, &self.secrets)
        )
    }

    /// What a connection error means for the TLS settings, when it is one of the usual ones.
    fn advice(&self, e: &postgres::Error, tls: bool) -> Option<String> {
        if let Some(db) = e.as_db_error() {
            let no_encryption =
                db.message().contains("no encryption") || db.message().contains("SSL off");
            if !tls
                && *db.code() == postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && no_encryption
            {
                return Some(format!(
                    "the server requires TLS for this connection: its pg_hba.conf has no entry \
                     that accepts it without encryption (only hostssl ones), and sslmode={} did \
                     not use TLS; connect with sslmode=require or stronger (verify-ca, \
                     verify-full)",
                    self.tls.mode.name()
                ));
            }
            return None;
        }
        if no_tls_on_server(e) {
            return Some(format!(
                "the server does not accept TLS connections, and sslmode={} needs TLS: turn \
                 ssl on in the server's configuration, or use sslmode=prefer",
                self.tls.mode.name()
            ));
        }
        let cause = tls_cause(e)?;
        let why = cause.to_string();
        if why.contains("hostname mismatch") || why.contains("IP address mismatch") {
            return Some(format!(
                "the server's certificate does not name the host {} (sslmode=verify-full checks \
                 it): connect with a host name the certificate was issued for, or use \
                 sslmode=verify-ca to check the certificate chain only",
                self.host_name()
            ));
        }
        if why.contains("certificate verify failed") {
            let root = match &self.tls.root {
                RootCert::File(p) => format!("the root certificate {} (sslrootcert)", p.display()),
                RootCert::System => "the system's trusted roots (sslrootcert=system)".into(),
                RootCert::None => "the root certificate".into(),
            };
            return Some(format!(
                "the server's certificate could not be verified against {root}: check that \
                 sslrootcert names the certificate of the CA that signed the server's \
                 certificate (ask the database's administrators for it), or use \
                 sslmode=require to encrypt without verifying"
            ));
        }
        None
    }

    /// The first host, as given.
    fn host_name(&self) -> String {
        match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }

    /// Copies rows in COPY text format into a table, on a connection or inside a transaction;
    /// `frozen` writes them frozen (`WITH (FREEZE)`: the table emptied or made in this
    /// transaction).
    pub fn copy_into(
        &self,
        client: &mut impl postgres::GenericClient,
        table: &str,
        columns: &str,
        frozen: bool,
        mut rows: impl std::io::Read,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let with = if frozen { " WITH (FREEZE)" } else { "" };
        let mut w = client
            .copy_in(&format!("COPY {table} ({columns}) FROM STDIN{with}"))
            .map_err(|e| self.error(&e, &format!("starting COPY into {table}")))?;
        std::io::copy(&mut rows, &mut w)
            .with_context(|| format!("database {}: copying into {table}", self.shown()))?;
        w.finish()
            .map_err(|e| self.error(&e, &format!("copying into {table}")))?;
        Ok(())
    }

    /// An error from the driver, with the database named and the password scrubbed.
    pub fn error(&self, e: &postgres::Error, what: &str) -> anyhow::Error {
        anyhow::Error::new(DbError {
            code: e.code().cloned(),
            text: format!(
                "database {}: {what}: {}",
                self.shown,
                scrub(&self.describe(e), &self.secrets)
            ),
        })
    }

    /// The text of a driver error: the server's message with its detail and hint, or the chain
    /// of causes (not yet scrubbed).
    fn describe(&self, e: &postgres::Error) -> String {
        let mut text = e.to_string();
        if let Some(db) = e.as_db_error() {
            text = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                text += &format!(" ({d})");
            }
            if let Some(h) = db.hint() {
                text += &format!("; hint: {h}");
            }
        } else {
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                let s_text = s.to_string();
                // The driver's text often ends with its cause already.
                if !text.contains(&s_text) {
                    text += &format!(": {s_text}");
                }
                src = s.source();
            }
        }
        text
    }
}

/// Why one connection attempt failed: the TLS settings could not be set up (e.g. the root
/// certificate is unreadable), or the driver failed.
enum AttemptError {
    Setup(anyhow::Error),
    Driver(postgres::Error),
}

impl AttemptError {
    /// The server answered and refused (authentication, pg_hba.conf).
    fn rejected_by_server(&self) -> bool {
        matches!(self, AttemptError::Driver(e) if e.as_db_error().is_some())
    }

    /// The server answered the TLS request with "no".
    fn no_tls_on_server(&self) -> bool {
        matches!(self, AttemptError::Driver(e) if no_tls_on_server(e))
    }

    /// The TLS handshake failed (e.g. the certificate could not be verified).
    fn tls_handshake_failed(&self) -> bool {
        matches!(self, AttemptError::Driver(e) if tls_cause(e).is_some())
    }
}

/// The TLS library's error behind a driver error, when the handshake failed.
fn tls_cause(e: &postgres::Error) -> Option<&native_tls::Error> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(t) = s.downcast_ref::<native_tls::Error>() {
            return Some(t);
        }
        src = s.source();
    }
    None
}

/// Whether the server refused the TLS request (the driver's "server does not support TLS").
fn no_tls_on_server(e: &postgres::Error) -> bool {
    e.as_db_error().is_none()
        && tls_cause(e).is_none()
        && e.to_string().contains("server does not support TLS")
}

/// Passwords as they might be written in a URL or a `key=value` string, for scrubbing.
fn guess_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, pw)) = userinfo.split_once(':') {
                out.push(pw.to_string());
            }
        }
        if let Some(q) = rest.split_once('?').map(|(_, q)| q) {
            for kv in q.split('&') {
                if let Some(("password", v)) = kv.split_once('=') {
                    out.push(v.to_string());
                }
            }
        }
    }
    for part in url.split_whitespace() {
        if let Some(v) = part.strip_prefix("password=") {
            out.push(v.trim_matches('\'').to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Replaces every secret in `text` by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_string();
    for s in secrets {
        t = t.replace(s.as_str(), "***");
    }
    t
}

/// Checks that the schema of `db init` is there.
pub fn check_schema(db: &Database, client: &mut Client) -> Result<()> {
    let row = client
        .query_one("SELECT to_regclass('lookmig_schema') IS NOT NULL", &[])
        .map_err(|e| db.error(&e, "reading the schema"))?;
    if !row.get::<_, bool>(0) {
        anyhow::bail!(
            "database {}: holds no lookmig catalog schema; create it with `lookmig db init --database URL`",
            db.shown()
        );
    }
    Ok(())
}

/// Reads one row of `t` (selected with [`Table::column_list`]) back into a record.
pub fn read_row(t: &Table, row: &postgres::Row) -> Result<serde_json::Value> {
    let types = t.column_types();
    let mut cells = Vec::with_capacity(types.len());
    for (i, ty) in types.iter().enumerate() {
        let cell = match ty {
            Ty::Int => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
            Ty::Text => row.try_get::<_, Option<String>>(i)?.map(Cell::Text),
            Ty::Bool => row.try_get::<_, Option<bool>>(i)?.map(Cell::Bool),
            Ty::Json => row
                .try_get::<_, Option<serde_json::Value>>(i)?
                .map(Cell::Json),
            Ty::Subject => unreachable!("column_types splits subjects"),
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    let extra = match row.try_get::<_, serde_json::Value>(types.len())? {
        serde_json::Value::Object(m) => m,
        _ => anyhow::bail!("{}: `extra` is not a JSON object", t.name),
    };
    Ok(schema::from_row(t, Row { cells, extra }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_deadlock_or_a_serialization_failure_is_worth_a_retry() {
        use postgres::error::SqlState;
        let err = |code: Option<SqlState>| {
            anyhow::Error::new(DbError {
                code,
                text: "x".into(),
            })
            .context("running a batch")
        };
        assert!(is_retryable(&err(Some(SqlState::T_R_DEADLOCK_DETECTED))));
        assert!(is_retryable(&err(Some(
            SqlState::T_R_SERIALIZATION_FAILURE
        ))));
        assert!(!is_retryable(&err(Some(SqlState::LOCK_NOT_AVAILABLE))));
        assert!(!is_retryable(&err(None)));
        assert!(!is_retryable(&anyhow::anyhow!("deadlock detected")));
    }

    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let db = Database::parse("postgresql://alice:s3cr%40t@db.example:6543/catalog").unwrap();
        assert_eq!(db.shown(), "alice@db.example:6543/catalog");
        let db = Database::parse("host=/tmp/x port=5 user=bob password=hunter2 dbname=c").unwrap();
        assert_eq!(db.shown(), "bob@/tmp/x:5/c");
        assert_eq!(scrub("failed for hunter2", &db.secrets), "failed for ***");
        let e = Database::parse("postgresql://alice:hunter2@db:notaport/x")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = Database::parse("host=h password=hunter2 bogus=1")
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}

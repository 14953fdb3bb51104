//! The live-database target (issue 4): a PostgreSQL database holding the catalog schema of
//! [`schema`], loaded from an export ([`load`]), dumped back to one ([`dump`]), and changed by a
//! bundle under the guards of SPEC §7 ([`apply`]).
//!
//! The database URL (`postgresql://USER:PASSWORD@HOST:PORT/DBNAME`, or `key=value` pairs) never
//! appears in output or errors: messages name the database as `USER@HOST:PORT/DBNAME`, and every
//! error text from the driver is scrubbed of the password before it is shown.

pub mod apply;
pub mod dump;
pub mod load;
pub mod schema;

use anyhow::{anyhow, Result};
use postgres::{Client, NoTls};
use schema::{Cell, Row, Table, Ty};
use std::str::FromStr;

/// A database to connect to, with what may be shown of it.
pub struct Database {
    config: postgres::Config,
    shown: String,
    secrets: Vec<String>,
}

impl Database {
    /// Parses a URL or `key=value` connection string; the error never shows the password.
    pub fn parse(url: &str) -> Result<Database> {
        let guessed = guess_secrets(url);
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            anyhow!(
                "the database URL is not valid ({}); expected postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME",
                scrub(&e.to_string(), &guessed)
            )
        })?;
        let mut secrets = guessed;
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
            shown,
            secrets,
        })
    }

    /// How the database is named in messages (no password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Connects (without TLS).
    pub fn connect(&self) -> Result<Client> {
        self.config
            .connect(NoTls)
            .map_err(|e| self.error(&e, "cannot connect"))
    }

    /// Copies a prepared file of rows (COPY text format) into a table, inside `tx`.
    pub fn copy_into(
        &self,
        tx: &mut postgres::Transaction,
        table: &str,
        columns: &str,
        rows: &mut std::fs::File,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        std::io::Seek::rewind(rows).context("reading a temporary file")?;
        let mut w = tx
            .copy_in(&format!("COPY {table} ({columns}) FROM STDIN"))
            .map_err(|e| self.error(&e, &format!("starting COPY into {table}")))?;
        std::io::copy(rows, &mut w)
            .with_context(|| format!("database {}: copying into {table}", self.shown()))?;
        w.finish()
            .map_err(|e| self.error(&e, &format!("copying into {table}")))?;
        Ok(())
    }

    /// An error from the driver, with the database named and the password scrubbed.
    pub fn error(&self, e: &postgres::Error, what: &str) -> anyhow::Error {
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
                text += &format!(": {s}");
                src = s.source();
            }
        }
        anyhow!(
            "database {}: {what}: {}",
            self.shown,
            scrub(&text, &self.secrets)
        )
    }
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

/// A progress bar on stderr (only when a terminal watches).
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// A bar of `len` steps, or a spinner counting when `len` is None.
    pub fn new(show: bool, what: &str, len: Option<u64>) -> Bar {
        use std::io::IsTerminal;
        if !show || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let (bar, template) = match len {
            Some(n) => (
                indicatif::ProgressBar::new(n),
                "{msg} [{bar:30}] {human_pos}/{human_len} ({eta} left)",
            ),
            None => (
                indicatif::ProgressBar::new_spinner(),
                "{spinner} {msg}: {human_pos} ({per_sec}, {elapsed})",
            ),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Bar(Some(bar))
    }

    /// Counts steps done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Changes the message.
    pub fn message(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_string());
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
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

//! Connection settings read the way `psql` (libpq) reads them, so that a URL, environment and
//! password file that work for `psql` work for lookmig too.
//!
//! The `postgres` driver parses URLs but knows only three TLS modes (disable, prefer, require),
//! rejects libpq's `sslrootcert`, and reads neither the `PG*` variables nor `~/.pgpass`. This
//! module fills those gaps:
//! - [`split_tls_params`] takes `sslmode` and `sslrootcert` out of a URL or `key=value` string
//!   before the driver sees it;
//! - [`resolve`] fills what the URL leaves out from `PGHOST`, `PGPORT`, `PGUSER`,
//!   `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`, `PGSSLROOTCERT` and the password file
//!   ([`pgpass_lookup`]); the URL always wins;
//! - [`Tls::connector`] turns a mode into `native-tls` settings (chain and host-name checks),
//!   and [`super::Database::connect`] makes one or two attempts as libpq does for `allow` and
//!   `prefer`.

use anyhow::{anyhow, bail, Context, Result};
use postgres::config::Host;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// libpq's `sslmode`: whether TLS is used, and what of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS when the server rejects the plain connection.
    Allow,
    /// TLS first; plain when the server does not support TLS or the TLS attempt fails.
    Prefer,
    /// TLS only; the certificate is not checked unless a root certificate is known (then as
    /// `verify-ca`).
    Require,
    /// TLS only; the certificate chain must lead to the root certificate; the host name is not
    /// checked.
    VerifyCa,
    /// TLS only; the chain is checked and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name libpq uses.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => bail!(
                "invalid sslmode {s:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
            ),
        })
    }
}

/// Where the certificate authority that signed the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// None known: the certificate cannot be verified.
    None,
    /// A PEM file of one or more CA certificates (`sslrootcert=FILE`, `PGSSLROOTCERT`, or
    /// `~/.postgresql/root.crt` when it exists). Only these are trusted.
    File(PathBuf),
    /// `sslrootcert=system`: the system's trusted roots.
    System,
}

/// The TLS settings of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The mode (default `prefer`).
    pub mode: SslMode,
    /// The trusted roots. A named file that cannot be read is an error whatever the mode
    /// (stricter than libpq, which skips a missing one below `verify-ca`: a mistyped path
    /// should not quietly turn verification off).
    pub root: RootCert,
}

impl Tls {
    /// Whether the chain of the server's certificate is checked. As in libpq, a known root
    /// certificate makes `require` (and `prefer`, `allow` when they use TLS) check it.
    pub fn verifies_chain(&self) -> bool {
        matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) || self.root != RootCert::None
    }

    /// The `native-tls` connector for this mode.
    pub fn connector(&self) -> Result<postgres_native_tls::MakeTlsConnector> {
        let mut b = native_tls::TlsConnector::builder();
        match &self.root {
            RootCert::File(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!(
                        "reading the root certificate {} (sslrootcert)",
                        path.display()
                    )
                })?;
                let certs = native_tls::Certificate::stack_from_pem(&pem).with_context(|| {
                    format!(
                        "reading the root certificate {} (sslrootcert): not PEM certificates",
                        path.display()
                    )
                })?;
                if certs.is_empty() {
                    bail!(
                        "the root certificate file {} (sslrootcert) holds no PEM certificate",
                        path.display()
                    );
                }
                b.disable_built_in_roots(true);
                for c in certs {
                    b.add_root_certificate(c);
                }
            }
            RootCert::System => {}
            RootCert::None => {
                if matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull) {
                    bail!(
                        "sslmode={} checks the server's certificate, but no root certificate is known: \
                         give sslrootcert=/path/to/ca.crt (or PGSSLROOTCERT, or put it in \
                         ~/.postgresql/root.crt), use sslrootcert=system for the system's trusted \
                         roots, or use sslmode=require to encrypt without verifying",
                        self.mode.name()
                    );
                }
                // Encrypt without verifying (libpq's require/prefer/allow without a root).
                b.danger_accept_invalid_certs(true);
            }
        }
        if self.mode != SslMode::VerifyFull {
            b.danger_accept_invalid_hostnames(true);
        }
        let c = b.build().context("setting up TLS")?;
        Ok(postgres_native_tls::MakeTlsConnector::new(c))
    }
}

/// A URL or `key=value` string without its `sslmode` and `sslrootcert`, and their values.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// What the driver parses.
    pub rest: String,
    /// `sslmode`, when given.
    pub sslmode: Option<String>,
    /// `sslrootcert`, when given.
    pub sslrootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`?sslmode=…&sslrootcert=…`, values
/// percent-decoded) or a `key=value` string (values may be quoted with `'…'`).
pub fn split_tls_params(url: &str) -> Split {
    let mut out = Split {
        rest: url.to_string(),
        sslmode: None,
        sslrootcert: None,
    };
    let is_url = url.starts_with("postgresql://") || url.starts_with("postgres://");
    if is_url {
        let Some((main, query)) = url.split_once('?') else {
            return out;
        };
        let mut kept = Vec::new();
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "sslmode" => out.sslmode = Some(percent_decode(v)),
                "sslrootcert" => out.sslrootcert = Some(percent_decode(v)),
                _ => kept.push(kv),
            }
        }
        out.rest = if kept.is_empty() {
            main.to_string()
        } else {
            format!("{main}?{}", kept.join("&"))
        };
        return out;
    }
    let Some(pairs) = key_values(url) else {
        return out; // not well formed: the driver says why
    };
    let mut rest = String::new();
    let mut last = 0;
    for (k, v, start, end) in pairs {
        let slot = match k.as_str() {
            "sslmode" => &mut out.sslmode,
            "sslrootcert" => &mut out.sslrootcert,
            _ => continue,
        };
        *slot = Some(v);
        rest.push_str(&url[last..start]);
        last = end;
    }
    rest.push_str(&url[last..]);
    out.rest = rest;
    out
}

/// [`split_tls_params`], and for a URL whose hosts have no port while `PGPORT` is set, that
/// port written into the URL: the driver would take 5432 for them, but libpq takes `PGPORT`.
pub fn prepare(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Split {
    let mut split = split_tls_params(url);
    if let Some(port) = env("PGPORT").filter(|p| !p.is_empty()) {
        split.rest = fill_url_ports(&split.rest, &port);
    }
    split
}

/// `url` with `:port` after each host of its authority that has none.
fn fill_url_ports(url: &str, port: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    if scheme != "postgresql" && scheme != "postgres" {
        return url.to_string();
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    if hosts.is_empty() {
        return url.to_string();
    }
    let hosts: Vec<String> = hosts
        .split(',')
        .map(|h| {
            let has_port = match h.strip_prefix('[') {
                Some(v6) => v6.contains("]:"),
                None => h.contains(':'),
            };
            if has_port {
                h.to_string()
            } else {
                format!("{h}:{port}")
            }
        })
        .collect();
    format!("{scheme}://{userinfo}{}{tail}", hosts.join(","))
}

/// The pairs of a libpq `key=value` string, each with its byte range, or None when the string
/// is not one.
fn key_values(s: &str) -> Option<Vec<(String, String, usize, usize)>> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            return Some(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        skip_ws(&mut i);
        if i == b.len() || b[i] != b'=' || key.is_empty() {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Vec::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        out.push((key, String::from_utf8(value).ok()?, start, i));
    }
}

/// `%XX` decoding of a URL query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The libpq default socket folders: a unix-socket connection to one of them counts as
/// `localhost` in the password file.
const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// What [`resolve`] found besides the driver's configuration.
pub struct Resolved {
    /// TLS settings.
    pub tls: Tls,
    /// Passwords taken from the environment or the password file, for scrubbing.
    pub secrets: Vec<String>,
    /// Things to tell the user (a password file ignored for its permissions).
    pub warnings: Vec<String>,
}

/// Fills what the URL left out of `config` from the environment (`env` looks a variable up),
/// then the defaults: URL beats environment beats defaults, for each setting on its own.
pub fn resolve(
    config: &mut postgres::Config,
    split: &Split,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut warnings = Vec::new();
    let mut secrets = Vec::new();
    if config.get_hosts().is_empty() {
        match var("PGHOST") {
            Some(hosts) => {
                for h in hosts.split(',') {
                    config.host(h);
                }
            }
            None => {
                let dir = DEFAULT_SOCKET_DIRS
                    .iter()
                    .find(|d| Path::new(d).is_dir())
                    .unwrap_or(&"/tmp");
                config.host(dir);
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = var("PGPORT") {
            for p in ports.split(',') {
                let p = p
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| anyhow!("PGPORT {p:?} is not a port number"))?;
                config.port(p);
            }
        }
    }
    if config.get_user().is_none() {
        if let Some(u) = var("PGUSER")
            .or_else(|| var("USER"))
            .or_else(|| var("LOGNAME"))
        {
            config.user(&u);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(d) = var("PGDATABASE") {
            config.dbname(&d);
        }
    }
    if config.get_password().is_none() {
        if let Some(p) = var("PGPASSWORD") {
            secrets.push(p.clone());
            config.password(p);
        } else if let Some(p) = password_from_file(config, &var, &mut warnings)? {
            secrets.push(p.clone());
            config.password(p);
        }
    }
    let mode = match split.sslmode.clone().or_else(|| var("PGSSLMODE")) {
        Some(m) => m.parse()?,
        None => SslMode::Prefer,
    };
    let named = split.sslrootcert.clone().or_else(|| var("PGSSLROOTCERT"));
    let root = match &named {
        Some(s) if s == "system" => RootCert::System,
        Some(s) => RootCert::File(PathBuf::from(s)),
        None => match var("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt")) {
            Some(p) if p.is_file() => RootCert::File(p),
            _ => RootCert::None,
        },
    };
    Ok(Resolved {
        tls: Tls { mode, root },
        secrets,
        warnings,
    })
}

/// The password of the password file (`PGPASSFILE`, else `~/.pgpass`) for the first host,
/// port, database and user, when the file exists and only its owner may read it.
fn password_from_file(
    config: &postgres::Config,
    var: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>> {
    let path = match var("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => match var("HOME") {
            Some(h) => Path::new(&h).join(".pgpass"),
            None => return Ok(None),
        },
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        warnings.push(format!(
            "password file {} is not a plain file; it is ignored",
            path.display()
        ));
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            warnings.push(format!(
                "password file {} has group or world access; permissions should be u=rw (0600) \
                 or less; it is ignored",
                path.display()
            ));
            return Ok(None);
        }
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => {
            let p = p.display().to_string();
            let p = p.trim_end_matches('/');
            if DEFAULT_SOCKET_DIRS.contains(&p) {
                "localhost".to_string()
            } else {
                p.to_string()
            }
        }
        None => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    Ok(pgpass_lookup(&text, &host, &port, db, user))
}

/// One field of a password-file line: a literal, or `*` (anything).
#[derive(Debug, PartialEq, Eq)]
enum Field {
    Any,
    Is(String),
}

/// The password of the first line of a libpq password file
/// (`hostname:port:database:username:password`) that matches; `*` alone matches anything,
/// `\:` and `\\` stand for `:` and `\`, lines starting with `#` are comments.
pub fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    let wanted = [host, port, db, user];
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((fields, password)) = pgpass_line(line) else {
            continue;
        };
        let hit = fields.iter().zip(wanted).all(|(f, w)| match f {
            Field::Any => true,
            Field::Is(s) => s == w,
        });
        if hit {
            return Some(password);
        }
    }
    None
}

/// The four fields and the password of a line, or None when it has fewer than five fields.
fn pgpass_line(line: &str) -> Option<([Field; 4], String)> {
    let mut fields = Vec::with_capacity(4);
    let mut cur = String::new();
    let mut escaped_any = false;
    let mut chars = line.chars();
    while fields.len() < 4 {
        match chars.next()? {
            '\\' => {
                cur.push(chars.next()?);
                escaped_any = true;
            }
            ':' => {
                let f = if cur == "*" && !escaped_any {
                    Field::Any
                } else {
                    Field::Is(std::mem::take(&mut cur))
                };
                cur.clear();
                escaped_any = false;
                fields.push(f);
            }
            c => cur.push(c),
        }
    }
    let mut password = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => password.push(chars.next().unwrap_or('\\')),
            c => password.push(c),
        }
    }
    let fields: [Field; 4] = fields.try_into().ok()?;
    Some((fields, password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn pgpass_matches_fields_wildcards_and_escapes() {
        let text = "# comment\n\
                    db.example:5432:catalog:alice:first\n\
                    *:*:*:bob:any\\:where\n\
                    /tmp/x\\:y:6000:*:carol:back\\\\slash:colon\n\
                    \\*:1:d:u:literal-star\n\
                    short:line\n\
                    *:*:*:*:fallback\n";
        let f = |h, p, d, u| pgpass_lookup(text, h, p, d, u);
        assert_eq!(
            f("db.example", "5432", "catalog", "alice").as_deref(),
            Some("first")
        );
        assert_eq!(
            f("db.example", "5433", "catalog", "alice").as_deref(),
            Some("fallback")
        );
        assert_eq!(f("h", "1", "d", "bob").as_deref(), Some("any:where"));
        assert_eq!(
            f("/tmp/x:y", "6000", "whatever", "carol").as_deref(),
            Some("back\\slash:colon")
        );
        assert_eq!(f("*", "1", "d", "u").as_deref(), Some("literal-star"));
        assert_eq!(f("other", "1", "d", "u").as_deref(), Some("fallback"));
        assert_eq!(
            pgpass_lookup("h:1:d:u:p\r\n", "h", "1", "d", "u").as_deref(),
            Some("p")
        );
        assert_eq!(pgpass_lookup("h:1:d:u\n", "h", "1", "d", "u"), None);
        assert_eq!(pgpass_lookup("", "h", "1", "d", "u"), None);
    }

    #[test]
    fn tls_params_are_taken_out_of_urls_and_key_values() {
        let s = split_tls_params(
            "postgresql://u:p@h/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fca%20dir%2Fca.crt",
        );
        assert_eq!(s.rest, "postgresql://u:p@h/db?application_name=x");
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/ca dir/ca.crt"));
        let s = split_tls_params("postgres://h/db?sslmode=require");
        assert_eq!(s.rest, "postgres://h/db");
        let s = split_tls_params("host=h sslmode=verify-ca sslrootcert='/a b/c\\'d' dbname=x");
        assert_eq!(s.rest, "host=h   dbname=x");
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/a b/c'd"));
        let s = split_tls_params("host=h port=5");
        assert_eq!((s.rest.as_str(), s.sslmode), ("host=h port=5", None));
        assert!("verify-all".parse::<SslMode>().is_err());
    }

    fn resolved(url: &str, vars: &[(&str, &str)]) -> (postgres::Config, Resolved) {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let split = prepare(url, &|k| env.get(k).cloned());
        let mut c = postgres::Config::from_str(&split.rest).unwrap();
        let r = resolve(&mut c, &split, &|k| env.get(k).cloned()).unwrap();
        (c, r)
    }

    #[test]
    fn the_url_beats_the_environment_which_beats_the_defaults() {
        let vars = [
            ("PGHOST", "envhost"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
            ("PGPASSWORD", "envpw"),
            ("PGSSLMODE", "verify-ca"),
            ("PGSSLROOTCERT", "/env/ca.crt"),
            ("HOME", "/nonexistent"),
        ];
        let (c, r) = resolved(
            "postgresql://urluser:urlpw@urlhost:7000/urldb?sslmode=require&sslrootcert=/url/ca.crt",
            &vars,
        );
        assert_eq!(c.get_hosts(), &[Host::Tcp("urlhost".into())]);
        assert_eq!(c.get_ports(), &[7000]);
        assert_eq!(c.get_user(), Some("urluser"));
        assert_eq!(c.get_dbname(), Some("urldb"));
        assert_eq!(c.get_password(), Some(&b"urlpw"[..]));
        assert_eq!(r.tls.mode, SslMode::Require);
        assert_eq!(r.tls.root, RootCert::File("/url/ca.crt".into()));

        let (c, r) = resolved("postgresql://", &vars);
        assert_eq!(c.get_hosts(), &[Host::Tcp("envhost".into())]);
        assert_eq!(c.get_ports(), &[6000]);
        assert_eq!(c.get_user(), Some("envuser"));
        assert_eq!(c.get_dbname(), Some("envdb"));
        assert_eq!(c.get_password(), Some(&b"envpw"[..]));
        assert_eq!(r.secrets, vec!["envpw".to_string()]);
        assert_eq!(r.tls.mode, SslMode::VerifyCa);
        assert_eq!(r.tls.root, RootCert::File("/env/ca.crt".into()));

        // Partly silent: each setting on its own.
        let (c, _) = resolved("postgresql://u@urlhost,[::1],h3:7001/db", &vars);
        assert_eq!(c.get_ports(), &[6000, 6000, 7001]);
        let (c, _) = resolved("host=urlhost dbname=db", &vars);
        assert_eq!(c.get_ports(), &[6000]);
        let (c, _) = resolved("postgresql://urlhost/db", &[]);
        assert_eq!(c.get_ports(), &[5432]);
        let (c, r) = resolved("postgresql://urluser@/urldb?sslrootcert=system", &vars);
        assert_eq!(c.get_hosts(), &[Host::Tcp("envhost".into())]);
        assert_eq!(c.get_user(), Some("urluser"));
        assert_eq!(c.get_dbname(), Some("urldb"));
        assert_eq!(r.tls.root, RootCert::System);

        // Nothing anywhere: prefer, no root certificate, a unix socket, the login name.
        let (c, r) = resolved(
            "postgresql://",
            &[("USER", "login"), ("HOME", "/nonexistent")],
        );
        assert_eq!(r.tls.mode, SslMode::Prefer);
        assert_eq!(r.tls.root, RootCert::None);
        assert!(matches!(c.get_hosts(), [Host::Unix(_)]));
        assert_eq!(c.get_user(), Some("login"));
        assert!(c.get_ports().is_empty());
        assert!(c.get_password().is_none());
    }

    #[test]
    fn the_password_file_is_used_only_when_no_password_was_given_and_only_if_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "h:5432:db:u:from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pf = file.to_str().unwrap();
        let (c, r) = resolved("postgresql://u@h/db", &[("PGPASSFILE", pf)]);
        assert_eq!(c.get_password(), Some(&b"from-file"[..]));
        assert_eq!(r.secrets, vec!["from-file".to_string()]);
        let (c, _) = resolved("postgresql://u:given@h/db", &[("PGPASSFILE", pf)]);
        assert_eq!(c.get_password(), Some(&b"given"[..]));
        let (c, _) = resolved(
            "postgresql://u@h/db",
            &[("PGPASSFILE", pf), ("PGPASSWORD", "env")],
        );
        assert_eq!(c.get_password(), Some(&b"env"[..]));
        let (c, _) = resolved("postgresql://u@h:5433/db", &[("PGPASSFILE", pf)]);
        assert!(c.get_password().is_none());
        // ~/.pgpass when PGPASSFILE is not set.
        std::fs::copy(&file, dir.path().join(".pgpass")).unwrap();
        let home = dir.path().to_str().unwrap();
        let (c, _) = resolved("postgresql://u@h/db", &[("HOME", home)]);
        assert_eq!(c.get_password(), Some(&b"from-file"[..]));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (c, r) = resolved("postgresql://u@h/db", &[("PGPASSFILE", pf)]);
        assert!(c.get_password().is_none());
        assert!(
            r.warnings[0].contains("group or world access"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn verification_needs_a_root_certificate() {
        let tls = |mode, root| Tls { mode, root };
        let e = tls(SslMode::VerifyFull, RootCert::None)
            .connector()
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslrootcert"), "{e}");
        assert!(tls(SslMode::Require, RootCert::None).connector().is_ok());
        assert!(!tls(SslMode::Require, RootCert::None).verifies_chain());
        assert!(tls(SslMode::Require, RootCert::File("/x".into())).verifies_chain());
        let e = tls(
            SslMode::VerifyCa,
            RootCert::File("/nonexistent/ca.crt".into()),
        )
        .connector()
        .err()
        .unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/ca.crt"), "{e:#}");
    }
}

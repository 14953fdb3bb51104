//! Connecting as `psql` users expect, against a real PostgreSQL server that accepts TLS only:
//! libpq's sslmode values, sslrootcert, the PG* variables, a password file, the messages of the
//! usual mistakes, and a password that never shows.
//!
//! The tests start their own throwaway cluster (`.ci/pg start` with `LOOKMIG_PG_OPTS`):
//! `ssl=on`, listening on 127.0.0.1 at a free port, with a CA and a server certificate made
//! here with the `openssl` command (the server's names `localhost` only, so `verify-full` to
//! 127.0.0.1 fails where `verify-ca` passes), and a `pg_hba.conf` of one `hostssl` line with
//! scram-sha-256 (plus `local` trust for the test's own setup over the unix socket). A role with
//! a password logs in over TCP. A watchdog stops the cluster when the test process ends, as in
//! `tests/db.rs`. Nothing here is skipped: without the server binaries or `openssl` the tests
//! fail and say what to install.

#[path = "common/cluster.rs"]
mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The role's password: a test fails if it shows anywhere.
const PASSWORD: &str = "Tls-s3cret-7f3a";
const ROLE: &str = "lookmig_tls";

struct Server {
    dir: PathBuf,
    port: u16,
    /// Held open; the watchdog stops the cluster when it closes.
    _watchdog: std::process::Child,
}

impl Server {
    fn ca(&self) -> String {
        self.dir.join("tls/ca.crt").display().to_string()
    }
    fn wrong_ca(&self) -> String {
        self.dir.join("tls/wrong-ca.crt").display().to_string()
    }
    /// A connection string for the superuser over the unix socket (trust).
    fn admin(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.display(),
            self.port
        )
    }
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); is it installed?"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The cluster's owner when the tests run as root (as `.ci/pg` picks it).
fn owner() -> Option<String> {
    if is_root() {
        let has_postgres = Command::new("getent")
            .args(["passwd", "postgres"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        Some(if has_postgres { "postgres" } else { "nobody" }.into())
    } else {
        None
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes a CA, a second (wrong) CA and a server certificate for `localhost` signed by the
/// first, in `tls`.
fn make_certificates(tls: &Path) {
    std::fs::create_dir_all(tls).unwrap();
    let openssl = |args: &[&str], what: &str| {
        run_ok(Command::new("openssl").args(args).current_dir(tls), what);
    };
    for (name, cn) in [("ca", "lookmig test CA"), ("wrong-ca", "some other CA")] {
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            "openssl (making a test CA; install openssl)",
        );
    }
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        "openssl (a server key)",
    );
    std::fs::write(
        tls.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "server.ext",
        ],
        "openssl (signing the server certificate)",
    );
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = cluster::folder("pgtls");
        let watchdog = cluster::watchdog(&dir);
        let tls = dir.join("tls");
        make_certificates(&tls);
        std::fs::write(
            tls.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        if let Some(u) = owner() {
            run_ok(
                Command::new("chown").arg("-R").arg(&u).arg(&tls),
                "chown of the certificates",
            );
        }
        run_ok(
            Command::new("chmod")
                .arg("0600")
                .arg(tls.join("server.key")),
            "chmod of the server key",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = tls.display();
        let opts = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c ssl=on \
             -c ssl_cert_file={t}/server.crt -c ssl_key_file={t}/server.key \
             -c hba_file={t}/pg_hba.conf -c password_encryption=scram-sha-256"
        );
        cluster::start(&dir, Some(&opts));
        let s = Server {
            dir,
            port,
            _watchdog: watchdog,
        };
        let mut c = postgres::Client::connect(&s.admin(), postgres::NoTls)
            .expect("connecting to the test server over its socket");
        c.batch_execute(&format!(
            "CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' CREATEDB"
        ))
        .unwrap();
        s
    })
}

/// A database of the role's own for one test.
fn database(test: &str) -> String {
    let s = server();
    let name = format!("lookmig_tls_{test}");
    let mut c = postgres::Client::connect(&s.admin(), postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name} OWNER {ROLE}"))
        .unwrap();
    name
}

/// A URL to `db` on `host` with the password and these query parameters.
fn url(host: &str, db: &str, query: &str) -> String {
    let port = server().port;
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("postgresql://{ROLE}:{PASSWORD}@{host}:{port}/{db}{q}")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the binary with a clean environment for connections (no PG* variables, an empty HOME
/// so no ~/.pgpass or ~/.postgresql/root.crt of the machine counts) plus `env`, and checks the
/// password shows nowhere.
fn lookmig(args: &[&str], env: &[(&str, &str)]) -> Out {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookmig"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("HOME", home.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("running lookmig");
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert!(
        !out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD),
        "the password shows:\n{}{}",
        out.stdout,
        out.stderr
    );
    out
}

/// Whether the library's connection to `url` uses TLS, as the server sees it.
fn uses_tls(url: &str) -> bool {
    let db = lookmig::db::Database::parse_with(url, &|_| None).unwrap();
    let mut c = db.connect().unwrap_or_else(|e| panic!("{e:#}"));
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .unwrap()
    .get(0)
}

/// Whether `db init` made its schema in `db`.
fn has_schema(db: &str) -> bool {
    let s = server();
    let mut c =
        postgres::Client::connect(&format!("{} dbname={db}", s.admin()), postgres::NoTls).unwrap();
    c.query_one("SELECT to_regclass('lookmig_schema') IS NOT NULL", &[])
        .unwrap()
        .get(0)
}

#[test]
fn verify_full_connects_over_tls() {
    let db = database("verify_full");
    let ca = server().ca();
    let u = url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let out = lookmig(&["db", "init", "--database", &u], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{ROLE}@localhost:{}/{db}", server().port)),
        "{}",
        out.stdout
    );
    assert!(has_schema(&db));
    assert!(uses_tls(&u));
}

#[test]
fn verify_ca_checks_the_chain_but_not_the_host_name() {
    let db = database("verify_ca");
    let ca = server().ca();
    let u = url(
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    let out = lookmig(&["db", "init", "--database", &u], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(uses_tls(&u));
    // The certificate names localhost only: verify-full to 127.0.0.1 fails, and says why.
    let u = url(
        "127.0.0.1",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let out = lookmig(&["db", "init", "--database", &u], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("does not name the host 127.0.0.1") && out.stderr.contains("verify-ca"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_wrong_root_certificate_fails_with_a_clear_message() {
    let db = database("wrong_ca");
    let wrong = server().wrong_ca();
    for mode in ["verify-full", "verify-ca", "require"] {
        let u = url(
            "localhost",
            &db,
            &format!("sslmode={mode}&sslrootcert={wrong}"),
        );
        let out = lookmig(&["db", "init", "--database", &u], &[]);
        assert_eq!(out.code, 1, "{mode}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "the server's certificate could not be verified against the root certificate {wrong}"
            )) && out.stderr.contains("sslrootcert"),
            "{mode}: {}",
            out.stderr
        );
    }
    assert!(!has_schema(&db));
}

#[test]
fn sslmode_disable_against_a_hostssl_only_server_says_tls_is_required() {
    let db = database("disable");
    let u = url("127.0.0.1", &db, "sslmode=disable");
    let out = lookmig(&["db", "init", "--database", &u], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the server requires TLS for this connection")
            && out.stderr.contains("pg_hba.conf")
            && out.stderr.contains("sslmode=require or stronger"),
        "{}",
        out.stderr
    );
    // The same through PGSSLMODE when the URL is silent.
    let u = url("127.0.0.1", &db, "");
    let out = lookmig(
        &["db", "init", "--database", &u],
        &[("PGSSLMODE", "disable")],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the server requires TLS for this connection"),
        "{}",
        out.stderr
    );
    assert!(!has_schema(&db));
}

#[test]
fn require_prefer_and_allow_encrypt_without_a_root_certificate() {
    let db = database("require");
    for query in ["sslmode=require", "", "sslmode=prefer", "sslmode=allow"] {
        let u = url("127.0.0.1", &db, query);
        assert!(uses_tls(&u), "{query}");
        let out = lookmig(&["db", "init", "--database", &u], &[]);
        assert_eq!(out.code, 0, "{query}: {}", out.stderr);
    }
    assert!(has_schema(&db));
}

#[test]
fn pg_variables_and_a_pgpass_file_are_used_when_the_url_is_silent() {
    let s = server();
    let db = database("pgvars");
    let dir = tempfile::tempdir().unwrap();
    let pgpass = dir.path().join("pgpass");
    std::fs::write(
        &pgpass,
        format!(
            "# a comment\nlocalhost:*:*:someone_else:nope\n*:{}:*:{ROLE}:{PASSWORD}\n",
            s.port
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = s.port.to_string();
    let ca = s.ca();
    let pgpass_s = pgpass.display().to_string();
    let env = [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", ROLE),
        ("PGDATABASE", db.as_str()),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
        ("PGPASSFILE", pgpass_s.as_str()),
    ];
    let out = lookmig(&["db", "init", "--database", "postgresql://"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{ROLE}@localhost:{port}/{db}")),
        "{}",
        out.stdout
    );
    assert!(has_schema(&db));

    // The URL beats the variables: its sslmode=disable is refused by the server even though
    // PGSSLMODE says verify-full.
    let out = lookmig(
        &[
            "db",
            "init",
            "--database",
            "postgresql://127.0.0.1/?sslmode=disable",
        ],
        &env,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the server requires TLS for this connection"),
        "{}",
        out.stderr
    );

    // PGPASSWORD without a file.
    let mut env2 = env.to_vec();
    env2.retain(|(k, _)| *k != "PGPASSFILE");
    env2.push(("PGPASSWORD", PASSWORD));
    let out = lookmig(&["db", "init", "--database", "postgresql://"], &env2);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // A password file others may read is ignored, with libpq's warning: no password then.
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = lookmig(&["db", "init", "--database", "postgresql://"], &env);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("has group or world access") && out.stderr.contains(&pgpass_s),
        "{}",
        out.stderr
    );
}

#[test]
fn the_password_never_shows() {
    let db = database("secret");
    let ca = server().ca();
    // A wrong password given in the URL: the server refuses it, the message does not show it.
    let wrong = "Wr0ng-s3cret-c41e";
    let u = format!(
        "postgresql://{ROLE}:{wrong}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={ca}",
        server().port
    );
    let out = lookmig(&["db", "init", "--database", &u], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("password authentication failed"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(wrong) && !out.stdout.contains(wrong),
        "{}",
        out.stderr
    );
    // Every failure above and here goes through `lookmig`, which checks the right password
    // shows nowhere; these add a bad URL, a bad sslmode, a missing root certificate and JSON
    // output.
    for u in [
        url("localhost", &db, "sslmode=verify-everything"),
        url("localhost:notaport", &db, ""),
        url(
            "localhost",
            &db,
            "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        ),
        url("localhost", &db, "sslmode=verify-full"),
    ] {
        let out = lookmig(&["db", "init", "--database", &u], &[]);
        assert_eq!(out.code, 1, "{u}: {}", out.stderr);
    }
    let u = url(
        "localhost",
        &db,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let out = lookmig(&["db", "init", "--json", "--database", &u], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dump.ndjson");
    let out = lookmig(
        &["dump", "-o", file.to_str().unwrap(), "--database", &u],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

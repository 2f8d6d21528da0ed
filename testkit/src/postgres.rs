//! A private PostgreSQL 15 for the tests, as the `tests` crate's `cyrus` is a private Cyrus: Debian's
//! postgresql-15 started by `tests/postgres/start.sh` in a temporary directory, on
//! 127.0.0.1 and a free port, owned by the unprivileged user `mailbackup-pg` (initdb refuses
//! root), with password authentication only. The program's role owns its database and is no
//! superuser. Stopped and removed on drop.
//!
//! Here rather than in the `tests` crate (which re-exports it) so that backup-server's own
//! state db tests run against it too.

type Result<T> = std::result::Result<T, String>;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The role the program logs in as.
pub const ROLE: &str = "mailbackup";
/// The database it owns.
pub const DATABASE: &str = "mailbackup";

/// A running private PostgreSQL.
pub struct PostgresInstance {
    dir: TempDir,
    port: u16,
    password: String,
}

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/postgres")
}

impl PostgresInstance {
    /// Starts one (a few seconds: initdb, then the server).
    pub fn start() -> Result<PostgresInstance> {
        Self::start_with(false)
    }

    /// Starts one that accepts only TLS, its certificate issued by [`Self::ca_file`].
    pub fn start_tls() -> Result<PostgresInstance> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<PostgresInstance> {
        let dir = TempDir::new()?;
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let mut raw = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        let password: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let pwfile = dir.0.as_path().join("password");
        write_private(&pwfile, &password)?;
        let out = Command::new(scripts().join("start.sh"))
            .arg(dir.0.as_path())
            .arg(port.to_string())
            .args([ROLE, DATABASE])
            .arg(&pwfile)
            .args(tls.then_some("tls"))
            .output()
            .map_err(|e| format!("tests/postgres/start.sh: {e}"))?;
        let pg = PostgresInstance {
            dir,
            port,
            password,
        };
        if !out.status.success() {
            return Err(format!(
                "tests/postgres/start.sh failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(pg)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The file holding the role's password (0600), as `state_db_password_file` takes it.
    pub fn password_file(&self) -> PathBuf {
        self.dir.0.as_path().join("password")
    }

    /// `postgres://mailbackup@127.0.0.1:PORT/mailbackup`: the config's `state_db`, without
    /// the password.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// A key=value connection string with `password` (for tests that try a wrong one).
    pub fn conn_string(&self, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={ROLE} dbname={DATABASE} password={password} connect_timeout=10",
            self.port
        )
    }

    /// A new empty database owned by the role (tests sharing one server keep apart).
    pub fn create_database(&self, name: &str) -> Result<String> {
        let out = Command::new("/usr/lib/postgresql/15/bin/psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", ROLE, "-d", DATABASE])
            .args(["-c", &format!("CREATE DATABASE \"{name}\"")])
            .env("PGPASSWORD", &self.password)
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(format!("postgres://{ROLE}@127.0.0.1:{}/{name}", self.port))
    }

    /// The CA that issued the server's certificate (a [`Self::start_tls`] instance).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.0.join("tls/ca.pem")
    }

    /// A CA unrelated to the server's certificate (a [`Self::start_tls`] instance).
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.0.join("tls/other-ca.pem")
    }

    /// The server's log (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.as_path().join("data/server.log")).unwrap_or_default()
    }
}

impl Drop for PostgresInstance {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("stop.sh"))
            .arg(self.dir.0.as_path())
            .status();
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A directory under the system's temporary directory, removed with everything in it on drop
/// (testkit has no dependencies; the server is stopped first, by [`PostgresInstance`]'s drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("mailbackup-pg.{}.{n}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
        Err(format!("no free name under {}", base.display()))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

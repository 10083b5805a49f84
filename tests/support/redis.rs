//! `Redis`: a throwaway `redis-server` on a free port, killed on drop; `TlsRedis`: the same
//! speaking TLS only, with a private CA (and optionally requiring client certificates).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;

/// A running `redis-server` with persistence off.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts `redis-server` on a free 127.0.0.1 port and waits until it answers PING.
    ///
    /// # Panics
    /// When `redis-server` is not installed (install the Debian package `redis-server`), or it
    /// does not answer PING within 10 s.
    pub fn start() -> Redis {
        // A free port is found by binding and releasing it; another test may take it before
        // redis-server binds, which then exits. Try again on another port.
        for _ in 0..2 {
            if let Ok(redis) = Redis::try_start_on(free_port()) {
                return redis;
            }
        }
        Redis::start_on(free_port())
    }

    /// Starts `redis-server` on `port` (e.g. the port of one that was just dropped, to stand
    /// for a Redis restart: empty data, empty script cache) and waits until it answers PING.
    ///
    /// # Panics
    /// As `start`, and when `port` is taken.
    pub fn start_on(port: u16) -> Redis {
        Redis::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `redis-server` on `port`; `Err` when it exits before answering PING (the port
    /// was taken).
    ///
    /// # Panics
    /// When `redis-server` is not installed, or it runs but does not answer PING within 10 s.
    fn try_start_on(port: u16) -> Result<Redis, String> {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = expect_redis_server(spawned);
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                return Err(format!(
                    "redis-server on port {port} exited with {status} before answering PING"
                ));
            }
            if redis.ping().is_ok_and(|reply| reply == "+PONG") {
                return Ok(redis);
            }
            if Instant::now() > deadline {
                panic!("redis-server on port {port} did not answer PING within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: connections stay open but nothing
    /// answers, the way a stalled Redis looks to a client.
    pub fn set_frozen(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} redis-server");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// "127.0.0.1:port".
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends PING and returns the raw reply line (e.g. "+PONG").
    pub fn ping(&self) -> io::Result<String> {
        self.command(&["PING"])
    }

    /// Sends one command as a RESP array and returns the first reply line, without its CRLF.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        let mut stream = TcpStream::connect(self.addr())?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
}

/// A RESP2 reply, fully read (see `Redis::query`).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`-style status.
    Status(String),
    /// `-ERR …`.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text: a status, or a bulk string read as UTF-8 (lossily).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The reply as an integer.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array reply (empty for anything else).
    pub fn elements(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "redis closed the connection before replying",
        ));
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad RESP line {line:?}"),
        )
    };
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" => Ok(Reply::Status(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => rest.parse().map(Reply::Integer).map_err(|_| bad()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(data)))
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let mut items = Vec::with_capacity(len as usize);
            for _ in 0..len {
                items.push(read_reply(reader)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(bad()),
    }
}

impl Redis {
    /// Sends one command as a RESP array and reads its whole reply (arrays and bulk strings
    /// included, unlike `command`).
    pub fn query(&self, args: &[&str]) -> io::Result<Reply> {
        let mut stream = TcpStream::connect(self.addr())?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        read_reply(&mut BufReader::new(stream))
    }

    /// Every key in the database, by `SCAN` (keys that are not valid UTF-8 are read lossily).
    pub fn all_keys(&self) -> io::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let reply = self.query(&["SCAN", &cursor, "COUNT", "1000"])?;
            let [next, batch] = reply.elements() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected SCAN reply {reply:?}"),
                ));
            };
            keys.extend(batch.elements().iter().filter_map(Reply::text));
            cursor = next.text().unwrap_or_else(|| "0".to_string());
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// `PTTL key`: milliseconds left, -1 for a key without expiry, -2 for a missing key.
    pub fn pttl(&self, key: &str) -> io::Result<i64> {
        let reply = self.query(&["PTTL", key])?;
        reply.integer().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected PTTL reply {reply:?}"),
            )
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === TlsRedis ===

/// Whether a `TlsRedis` requires client certificates (`tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `--tls-auth-clients no`: any client that trusts the server may connect.
    Off,
    /// `--tls-auth-clients yes`: only clients with a certificate signed by the CA (mTLS).
    Required,
}

/// A `redis-server` that listens only on TLS (`--port 0 --tls-port <free port>`), with
/// certificates made for it by the `openssl` command in a temp dir: a private CA, a server
/// certificate for 127.0.0.1 / localhost and a client certificate, both signed by the CA.
/// Killed (and its files removed) on drop.
pub struct TlsRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    /// Makes the certificates, starts `redis-server` with TLS only on a free 127.0.0.1 port and
    /// waits until `redis-cli --tls` gets PONG.
    ///
    /// # Panics
    /// When `openssl`, `redis-server` or `redis-cli` is not installed (Debian packages
    /// `openssl`, `redis-server`, `redis-tools`), when `redis-server` was built without TLS, or
    /// when it does not answer within 10 s.
    pub fn start(client_auth: ClientAuth) -> TlsRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        let port = free_port();
        let at = |name: &str| dir.path().join(name);
        let log = at("redis.log");
        let spawned = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(at("server.pem"))
            .arg("--tls-key-file")
            .arg(at("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(at("ca.pem"))
            .args([
                "--tls-auth-clients",
                match client_auth {
                    ClientAuth::Off => "no",
                    ClientAuth::Required => "yes",
                },
            ])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = expect_redis_server(spawned);
        let mut redis = TlsRedis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = redis.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!(
                    "redis-server with TLS on port {port} exited with {status} before answering PING \
                     (a redis-server built without TLS exits like this)\n--- stderr ---\n{stderr}\
                     --- log ---\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if redis.cli(&["PING"]).is_ok_and(|reply| reply == "PONG") {
                return redis;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server with TLS on port {port} did not answer PING within 10 s\n--- log ---\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// The private CA's certificate (PEM), which signed the server and client certificates.
    pub fn ca_file(&self) -> String {
        self.file("ca.pem")
    }

    /// A client certificate (PEM) signed by the CA.
    pub fn client_cert_file(&self) -> String {
        self.file("client.pem")
    }

    /// The client certificate's private key (PKCS#8 PEM).
    pub fn client_key_file(&self) -> String {
        self.file("client.key")
    }

    fn file(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 temp dir")
            .to_string()
    }

    /// Runs one command with `redis-cli --tls` (trusting the CA, presenting the client
    /// certificate) and returns its output, trimmed; `Err` when `redis-cli` fails.
    ///
    /// # Panics
    /// When `redis-cli` is not installed (Debian package `redis-tools`).
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--tls"])
            .args(["--cacert", &self.ca_file()])
            .args(["--cert", &self.client_cert_file()])
            .args(["--key", &self.client_key_file()])
            .args(args)
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "redis-cli is not on PATH; install the Debian package `redis-tools` \
                 (apt-get install redis-tools)"
            ),
            Err(e) => return Err(e),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || stdout.starts_with("Could not connect") {
            return Err(io::Error::other(format!(
                "redis-cli {args:?}: {} {}",
                stdout,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(stdout)
    }

    /// Every key in the database (`redis-cli --scan`), sorted.
    pub fn all_keys(&self) -> io::Result<Vec<String>> {
        let out = self.cli(&["--scan"])?;
        let mut keys: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        Ok(keys)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes into `dir`: `ca.pem`/`ca.key` (a private CA), `server.pem`/`server.key` (for
/// IP:127.0.0.1 and DNS:localhost) and `client.pem`/`client.key`, both signed by the CA.
/// Keys are P-256, in PKCS#8 PEM.
pub fn make_certificates(dir: &Path) {
    const NEW_KEY: [&str; 5] = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl_in(
        dir,
        &[
            &["req", "-x509"],
            &NEW_KEY[..],
            &[
                "-days",
                "1",
                "-subj",
                "/CN=portcullis test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    for (name, cn, serial, ext) in [
        (
            "server",
            "localhost",
            "2",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "portcullis", "3", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, ext_file) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&ext_file), ext).expect("write extensions file");
        openssl_in(
            dir,
            &[
                &["req", "-new"],
                &NEW_KEY[..],
                &["-subj", &format!("/CN={cn}"), "-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        openssl_in(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "1",
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ],
        );
    }
}

/// Runs `openssl <args>` in `dir`.
///
/// # Panics
/// When `openssl` is not installed (Debian package `openssl`) or fails.
fn openssl_in(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command is needed for TLS tests (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The started `redis-server`, or a loud failure naming the Debian package when it is missing.
fn expect_redis_server(spawned: io::Result<Child>) -> Child {
    match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "redis-server is not on PATH; these tests need a real Redis: install the Debian package \
             `redis-server` (apt-get install redis-server)"
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}

/// Calls of one Redis command so far, from `INFO commandstats` (0 before the first).
pub fn command_calls(redis: &Redis, command: &str) -> u64 {
    let info = redis
        .query(&["INFO", "commandstats"])
        .expect("INFO commandstats")
        .text()
        .expect("INFO is a bulk string");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

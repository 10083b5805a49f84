//! `Redis`: a throwaway `redis-server` on a free port, killed on drop.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
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
        let port = free_port();
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
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH; these tests need a real Redis: install the Debian package \
                 `redis-server` (apt-get install redis-server)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server on port {port} exited with {status} before answering PING");
            }
            if redis.ping().is_ok_and(|reply| reply == "+PONG") {
                return redis;
            }
            if Instant::now() > deadline {
                panic!("redis-server on port {port} did not answer PING within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its port.
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

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

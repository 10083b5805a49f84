//! `Gateway`: the real `portcullis` binary, run on free ports from a config template.
//!
//! A template is TOML with `${NAME}` placeholders. `${PROXY_ADDR}` and `${ADMIN_ADDR}` are
//! always filled with free 127.0.0.1 ports, `${DIR}` with the fixture's temporary directory,
//! and anything else with values given to `GatewayBuilder::var`. A placeholder left unfilled
//! is a test bug and panics.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::client::Client;
use super::free_port;

/// How long a gateway gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// Output of a child process, collected by reader threads so the child never blocks on a pipe.
#[derive(Clone, Default)]
pub struct Output {
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Output {
    fn capture(child: &mut Child) -> (Output, Vec<JoinHandle<()>>) {
        let output = Output::default();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            readers.push(pump(stdout, Arc::clone(&output.stdout)));
        }
        if let Some(stderr) = child.stderr.take() {
            readers.push(pump(stderr, Arc::clone(&output.stderr)));
        }
        (output, readers)
    }

    /// Lines written to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        join_lines(&self.stdout_lines())
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        join_lines(&self.stderr.lock().expect("stderr lock"))
    }
}

fn join_lines(lines: &[String]) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn pump(stream: impl Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    sink.lock().expect("output lock").push(text);
                }
            }
        }
    })
}

/// The result of running the binary to completion.
pub struct Finished {
    /// Exit status, or `None` if it had to be killed at the timeout.
    pub status: Option<ExitStatus>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl Finished {
    /// The exit code (`None` if killed by a signal or at the timeout).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `portcullis <args>` and waits up to `timeout` for it to exit (killing it after that).
///
/// # Panics
/// When the binary cannot be started.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Finished {
    let mut command = Command::new(binary());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary()));
    let (output, readers) = Output::capture(&mut child);
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for reader in readers {
        let _ = reader.join();
    }
    Finished {
        status,
        stdout: output.stdout(),
        stderr: output.stderr(),
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Fills `${NAME}` placeholders.
///
/// # Panics
/// When a placeholder is left unfilled.
pub fn fill(template: &str, vars: &[(String, String)]) -> String {
    let mut text = template.to_string();
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    if let Some(start) = text.find("${") {
        let rest = &text[start..];
        let end = rest.find('}').map(|e| e + 1).unwrap_or(rest.len());
        panic!(
            "config template placeholder {} was not filled",
            &rest[..end]
        );
    }
    text
}

/// Builds a `Gateway`.
#[derive(Clone)]
pub struct GatewayBuilder {
    template: String,
    vars: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// Fills `${name}` with `value` (in this config and in later `rewrite_config` calls).
    pub fn var(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.push((name.to_string(), value.into()));
        self
    }

    /// Sets an environment variable for the gateway process.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Starts the gateway and waits until it is ready.
    ///
    /// # Panics
    /// When it exits or is not ready (admin `/readyz` 200 and the proxy port open) in time.
    pub fn start(self) -> Gateway {
        // Free ports are found by binding and releasing; another test may grab one in between,
        // so a start that fails on an address in use is retried on new ports.
        for _ in 0..3 {
            let gateway = self.clone().spawn();
            match gateway.wait_ready() {
                Ok(()) => return gateway,
                Err(e) if e.contains("in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("gateway could not find free ports in 3 attempts");
    }

    /// Starts the gateway without waiting for it to be ready.
    ///
    /// # Panics
    /// When the binary cannot be started.
    pub fn spawn(mut self) -> Gateway {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let proxy_addr = format!("127.0.0.1:{}", free_port());
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let dir_text = dir.path().to_str().expect("utf-8 temp dir").to_string();
        self.vars
            .push(("PROXY_ADDR".to_string(), proxy_addr.clone()));
        self.vars
            .push(("ADMIN_ADDR".to_string(), admin_addr.clone()));
        self.vars.push(("DIR".to_string(), dir_text));
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, fill(&self.template, &self.vars)).expect("write config");

        let mut command = Command::new(binary());
        command
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.env_remove("RUST_LOG");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary()));
        let (output, readers) = Output::capture(&mut child);
        Gateway {
            child: Mutex::new(child),
            output,
            readers: Mutex::new(readers),
            proxy_addr,
            admin_addr,
            config_path,
            vars: self.vars,
            _dir: dir,
        }
    }
}

/// A running `portcullis run` process; killed on drop.
pub struct Gateway {
    child: Mutex<Child>,
    output: Output,
    readers: Mutex<Vec<JoinHandle<()>>>,
    proxy_addr: String,
    admin_addr: String,
    config_path: PathBuf,
    vars: Vec<(String, String)>,
    /// Holds the config file (and anything else the test puts in `${DIR}`) until drop.
    _dir: tempfile::TempDir,
}

// === impl Gateway ===

impl Gateway {
    /// A builder for a gateway running `template`.
    pub fn builder(template: &str) -> GatewayBuilder {
        GatewayBuilder {
            template: template.to_string(),
            vars: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Starts a gateway running `template` (which needs no variables beyond the built-in ones).
    ///
    /// # Panics
    /// See `GatewayBuilder::start`.
    pub fn start(template: &str) -> Gateway {
        Gateway::builder(template).start()
    }

    fn wait_ready(&self) -> Result<(), String> {
        let client = Client::with_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "gateway exited with {status} before it was ready\n--- stderr ---\n{}--- stdout ---\n{}",
                    self.stderr(),
                    self.output.stdout()
                ));
            }
            // Pingora does not exit when a listen address is taken: it logs and retries for
            // ever. Another test grabbed one of our free ports; start again on new ones.
            let stderr = self.stderr();
            if stderr.contains("is in use, will try again") {
                return Err(format!("listen address in use\n--- stderr ---\n{stderr}"));
            }
            let admin_ready = client
                .try_send("GET", &self.admin_url("/readyz"), &[], None)
                .is_ok_and(|r| r.status == 200);
            let proxy_open = admin_ready
                && TcpStream::connect_timeout(
                    &self.proxy_addr.parse().expect("proxy addr"),
                    Duration::from_millis(200),
                )
                .is_ok();
            if proxy_open {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway not ready after {READY_TIMEOUT:?} (admin /readyz 200: {admin_ready})\n--- stderr ---\n{}--- stdout ---\n{}",
                    self.stderr(),
                    self.output.stdout()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child lock").id()
    }

    /// "127.0.0.1:port" of the proxy listener.
    pub fn proxy_addr(&self) -> &str {
        &self.proxy_addr
    }

    /// "127.0.0.1:port" of the admin listener.
    pub fn admin_addr(&self) -> &str {
        &self.admin_addr
    }

    /// `http://<proxy>{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    /// `http://<admin>{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The config file the gateway was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temporary directory that holds the config (`${DIR}` in templates).
    pub fn dir(&self) -> &Path {
        self.config_path.parent().expect("config has a parent dir")
    }

    /// Replaces the config file with `template`, filled with the same ports and variables.
    /// The write is atomic (temp file + rename), so a reload never reads half a file.
    pub fn rewrite_config(&self, template: &str) {
        let text = fill(template, &self.vars);
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).expect("write new config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {which} {} failed", self.pid());
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .ok()
            .flatten()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(&mut self.child.lock().expect("child lock"), timeout);
        if status.is_some() {
            // Let the reader threads drain what the process wrote last.
            for reader in self.readers.lock().expect("readers lock").drain(..) {
                let _ = reader.join();
            }
        }
        status
    }

    /// Lines written to stdout so far (access-log lines when `access_log = "stdout"`).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.output.stdout_lines()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.output.stdout()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.output.stderr()
    }

    /// `GET /metrics` from the admin service.
    ///
    /// # Panics
    /// When it does not answer 200.
    pub fn metrics(&self) -> String {
        let response = Client::new().get(&self.admin_url("/metrics"));
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        response.body
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        drop(child);
        if thread::panicking() {
            let stderr = self.output.stderr();
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            eprintln!("--- gateway stderr (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

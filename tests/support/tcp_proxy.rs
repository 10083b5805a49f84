//! `TcpProxy`: forwards 127.0.0.1:<free port> to a target (a `redis-server`), with a switch
//! that turns the path into a black hole: bytes stop flowing in both directions, on open and
//! new connections alike, but no socket is closed, so the client sees no error, only silence,
//! the way a connection looks whose NAT entry or peer went away without a reset. Turning the
//! switch off lets the held bytes through.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often blocked threads look at the switches again.
const POLL: Duration = Duration::from_millis(10);

/// A TCP forwarder with a black-hole switch; stops (closing every socket) on drop.
pub struct TcpProxy {
    port: u16,
    shared: Arc<Switches>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Switches {
    black_hole: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
}

impl TcpProxy {
    /// Starts forwarding a free 127.0.0.1 port to `target` ("127.0.0.1:port").
    ///
    /// # Panics
    /// When it cannot listen on 127.0.0.1.
    pub fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the TCP proxy");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let shared = Arc::new(Switches::default());
        let target = target.to_string();
        let switches = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(&listener, &target, &switches));
        TcpProxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:port`, for a gateway to reach the target through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Turns the black hole on (nothing flows, nothing closes) or off (held bytes flow).
    pub fn set_black_hole(&self, on: bool) {
        self.shared.black_hole.store(on, Ordering::SeqCst);
    }

    /// Connections accepted so far (a client that gave up on a silent connection opens another).
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, target: &str, switches: &Arc<Switches>) {
    while !switches.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                switches.accepted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let pairs = client
                    .try_clone()
                    .and_then(|c| server.try_clone().map(|s| (c, s)));
                let Ok((client_copy, server_copy)) = pairs else {
                    continue;
                };
                let up = Arc::clone(switches);
                thread::spawn(move || pump(client, server, &up));
                let down = Arc::clone(switches);
                thread::spawn(move || pump(server_copy, client_copy, &down));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Copies `from` to `to` while the black hole is off; while it is on, a chunk read is held
/// (and nothing more is read) until it is off again. Ends on EOF, an error, or stop.
fn pump(mut from: TcpStream, mut to: TcpStream, switches: &Switches) {
    if from.set_read_timeout(Some(POLL * 5)).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    let stopped = || switches.stop.load(Ordering::SeqCst);
    let hold = || {
        while switches.black_hole.load(Ordering::SeqCst) && !stopped() {
            thread::sleep(POLL);
        }
    };
    while !stopped() {
        match from.read(&mut buf) {
            Ok(0) => {
                hold();
                break;
            }
            Ok(n) => {
                hold();
                if stopped() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

//! A TCP port on the host's loopback forwarded to an address inside a network namespace, so
//! that a browser on the host can open a server that runs in the namespace: without a route,
//! an address or a firewall rule anywhere (the host's routes and nftables are left alone).
//!
//! The listening socket is made in the host's namespace; then the forwarding thread enters the
//! target namespace, so every connection it opens to the target is made there. Each accepted
//! connection is copied both ways by two threads. Dropping the [`Forwarder`] stops listening
//! and closes every connection.

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use enclave_netns::Netns;

/// How long to wait for the target to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the idle listener looks whether it must stop.
const POLL: Duration = Duration::from_millis(50);

/// A running forwarder; stopped when dropped.
#[derive(Debug)]
pub struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One forwarded connection: its two sockets (to close them) and its two copying threads.
struct Connection {
    client: TcpStream,
    target: TcpStream,
    copies: [JoinHandle<()>; 2],
}

impl Forwarder {
    /// Listens on `127.0.0.1:port` (any free port when that one is taken) and forwards each
    /// connection to `to` inside `ns`.
    pub fn start(ns: &Netns, to: SocketAddr, port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
            .context("cannot listen on the host's loopback")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        // The thread's new sockets live in the namespace; the listener stays where it was made.
        let thread = ns
            .start_thread(|| anyhow::Ok(()), {
                let stop = Arc::clone(&stop);
                move |()| serve(&listener, to, &stop)
            })
            .context("cannot start the forwarding thread")?;
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, to: SocketAddr, stop: &AtomicBool) {
    let mut connections: Vec<Connection> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => match connect(client, to) {
                Ok(connection) => connections.push(connection),
                Err(e) => eprintln!("forward: {e:#}"),
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                eprintln!("forward: accept failed: {e}");
                std::thread::sleep(POLL);
            }
        }
        connections.retain(|c| !c.copies.iter().all(JoinHandle::is_finished));
    }
    for connection in connections {
        let _ = connection.client.shutdown(Shutdown::Both);
        let _ = connection.target.shutdown(Shutdown::Both);
        for copy in connection.copies {
            let _ = copy.join();
        }
    }
}

fn connect(client: TcpStream, to: SocketAddr) -> anyhow::Result<Connection> {
    client.set_nonblocking(false)?;
    let target = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to {to} in the namespace"))?;
    let copies = [
        copy(client.try_clone()?, target.try_clone()?)?,
        copy(target.try_clone()?, client.try_clone()?)?,
    ];
    Ok(Connection {
        client,
        target,
        copies,
    })
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s sending side.
fn copy(mut from: TcpStream, mut to: TcpStream) -> anyhow::Result<JoinHandle<()>> {
    Ok(std::thread::Builder::new()
        .name("forward-copy".into())
        .spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// Without a namespace to enter (unprivileged), the copying itself: bytes go both ways and
    /// an end on one side ends the other.
    #[test]
    fn a_connection_is_copied_both_ways() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).unwrap();
            s.write_all(&buf.repeat(2)).unwrap();
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = front.local_addr().unwrap();
        let mut client = TcpStream::connect(at).unwrap();
        let (accepted, _) = front.accept().unwrap();
        let connection = connect(accepted, to).unwrap();
        client.write_all(b"ping").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"pingping");
        echo.join().unwrap();
        for copy in connection.copies {
            copy.join().unwrap();
        }
    }
}

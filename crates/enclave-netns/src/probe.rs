use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::netns::Netns;
use crate::process::lock;
use crate::{Error, Result};

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingResult {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round-trip time in milliseconds, when any reply came.
    pub avg_rtt_ms: Option<f64>,
    /// The whole output, for error messages.
    pub output: String,
}

impl PingResult {
    /// Whether every request was answered.
    pub fn all_answered(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }

    /// Parses the summary lines of iputils `ping`.
    pub fn parse(output: &str) -> Self {
        let mut result = PingResult {
            transmitted: 0,
            received: 0,
            avg_rtt_ms: None,
            output: output.to_owned(),
        };
        for line in output.lines() {
            if let Some((sent, rest)) = line.split_once(" packets transmitted, ") {
                result.transmitted = sent.trim().parse().unwrap_or(0);
                result.received = rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
            }
            if let Some((_, figures)) = line.split_once(" = ") {
                if line.starts_with("rtt") || line.starts_with("round-trip") {
                    result.avg_rtt_ms = figures.split('/').nth(1).and_then(|v| v.parse().ok());
                }
            }
        }
        result
    }
}

impl Netns {
    /// Pings `dst` `count` times, 0.2 s apart, waiting at most one second for each reply.
    pub fn ping(&self, dst: &str, count: u32) -> Result<PingResult> {
        let count = count.to_string();
        let output =
            self.exec_output(&["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", dst])?;
        Ok(PingResult::parse(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Opens a TCP connection to `dst` from inside the namespace, within `timeout`.
    pub fn tcp_connect(&self, dst: SocketAddr, timeout: Duration) -> Result<()> {
        self.run_in(|| TcpStream::connect_timeout(&dst, timeout).map(drop))?
            .map_err(|source| Error::Probe {
                what: format!("TCP connect from {} to {dst}", self.node),
                source,
            })
    }

    /// Connects to an [`EchoServer`] at `dst` and returns the line it answered: the source
    /// address it saw, as `IP:PORT`.
    pub fn tcp_request(&self, dst: SocketAddr, timeout: Duration) -> Result<String> {
        self.run_in(|| -> std::io::Result<String> {
            let stream = TcpStream::connect_timeout(&dst, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line)?;
            if line.is_empty() {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            Ok(line.trim().to_owned())
        })?
        .map_err(|source| Error::Probe {
            what: format!("TCP request from {} to {dst}", self.node),
            source,
        })
    }

    /// Sends one UDP datagram to `dst` and waits up to `timeout` for an answer, which it returns
    /// as text (an [`EchoServer`] answers with the source address it saw).
    pub fn udp_probe(&self, dst: SocketAddr, timeout: Duration) -> Result<String> {
        self.run_in(|| -> std::io::Result<String> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(b"probe\n", dst)?;
            let mut buf = [0u8; 512];
            let (n, _) = socket.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
        })?
        .map_err(|source| Error::Probe {
            what: format!("UDP probe from {} to {dst}", self.node),
            source,
        })
    }

    /// Starts an echo server on `port` (TCP and UDP, all addresses) inside the namespace. Each
    /// TCP client and each UDP datagram is answered with one line: the source address the server
    /// saw, as `IP:PORT`. This is how a test proves SNAT.
    pub fn echo_server(&self, port: u16) -> Result<EchoServer> {
        EchoServer::start(self, port)
    }
}

/// A TCP and UDP echo server running on a thread inside a namespace; stopped when dropped.
#[derive(Debug)]
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(ns: &Netns, port: u16) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let path = format!("/run/netns/{}", ns.name());
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            let name = ns.name().to_owned();
            std::thread::spawn(move || {
                let bound = (|| -> Result<(TcpListener, UdpSocket)> {
                    let enter = |source| Error::Enter {
                        namespace: name.clone(),
                        source,
                    };
                    let file = std::fs::File::open(&path).map_err(enter)?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| enter(e.into()))?;
                    let bind = |source| Error::Probe {
                        what: format!("echo server bind to port {port} in {name}"),
                        source,
                    };
                    let tcp = TcpListener::bind(("0.0.0.0", port)).map_err(bind)?;
                    let udp = UdpSocket::bind(("0.0.0.0", port)).map_err(bind)?;
                    tcp.set_nonblocking(true).map_err(bind)?;
                    udp.set_read_timeout(Some(Duration::from_millis(20)))
                        .map_err(bind)?;
                    Ok((tcp, udp))
                })();
                let (tcp, udp) = match bound {
                    Ok(sockets) => {
                        let _ = ready_tx.send(Ok(()));
                        sockets
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                serve(&tcp, &udp, &stop, &seen);
            })
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop,
                seen,
                thread: Some(thread),
            }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Probe {
                what: format!("echo server in {} died while starting", ns.node()),
                source: ErrorKind::Other.into(),
            }),
        }
    }

    /// The source addresses of every client and datagram so far.
    pub fn seen(&self) -> Vec<SocketAddr> {
        lock(&self.seen).clone()
    }
}

fn serve(tcp: &TcpListener, udp: &UdpSocket, stop: &AtomicBool, seen: &Mutex<Vec<SocketAddr>>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match tcp.accept() {
            Ok((mut stream, peer)) => {
                lock(seen).push(peer);
                let _ = stream.set_nonblocking(false);
                let _ = stream.write_all(format!("{peer}\n").as_bytes());
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        // The UDP read timeout paces the loop.
        if let Ok((_, peer)) = udp.recv_from(&mut buf) {
            lock(seen).push(peer);
            let _ = udp.send_to(format!("{peer}\n").as_bytes(), peer);
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PingResult;

    #[test]
    fn parses_iputils_summary() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
                   64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.045 ms\n\n\
                   --- 10.0.0.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 402ms\n\
                   rtt min/avg/max/mdev = 0.040/0.052/0.064/0.012 ms\n";
        let result = PingResult::parse(out);
        assert_eq!((result.transmitted, result.received), (3, 2));
        assert_eq!(result.avg_rtt_ms, Some(0.052));
        assert!(!result.all_answered());
    }

    #[test]
    fn parses_total_loss() {
        let out = "--- 10.9.9.9 ping statistics ---\n\
                   2 packets transmitted, 0 received, 100% packet loss, time 1020ms\n";
        let result = PingResult::parse(out);
        assert_eq!(
            (result.transmitted, result.received, result.avg_rtt_ms),
            (2, 0, None)
        );
        assert!(!result.all_answered());
    }
}

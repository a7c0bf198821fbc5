use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

    /// Judges a finished `ping`: the summary when it ran (answered or not), also when the
    /// kernel refused to send because the destination is unreachable (`connect: No route to
    /// host`, `sendmsg: Operation not permitted` from a firewall); [`Error::ProbeTool`] for
    /// everything else (not installed, killed, a bad argument, no raw socket), so that a ping
    /// that could not run is never read as "no answer".
    pub fn from_output(command: &str, output: &std::process::Output) -> Result<Self> {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let result = PingResult::parse(&format!("{stdout}{stderr}"));
        // iputils: 0 = answered, 1 = ran and got no (or not every) reply, 2 = other errors,
        // among them the network's own refusal before the first packet left.
        let ran = match output.status.code() {
            Some(0 | 1) => result.transmitted > 0,
            Some(2) => result.transmitted > 0 || is_network_refusal(&stderr),
            _ => false,
        };
        if ran {
            Ok(result)
        } else {
            Err(Error::ProbeTool {
                command: command.to_owned(),
                status: output.status,
                output: format!("{} {}", stderr.trim(), stdout.trim())
                    .trim()
                    .to_owned(),
            })
        }
    }
}

/// Whether `ping`'s standard error is the kernel refusing to send towards the destination
/// (no route, an `unreachable` route, a firewall that drops on output): the network's "no".
fn is_network_refusal(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        let syscall = line.contains("connect: ") || line.contains("sendmsg: ");
        let refused = [
            "Network is unreachable",
            "No route to host",
            "Operation not permitted",
        ]
        .iter()
        .any(|reason| line.contains(reason));
        syscall && refused
    })
}

/// Whether a socket error is the network's answer (refused, unreachable, reset, nothing in
/// time, dropped by a firewall on output) rather than a probe that could not run.
fn is_no_answer(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::TimedOut
            | K::WouldBlock
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::PermissionDenied
    )
}

/// A socket probe's error: [`Error::Unreachable`] when the network answered "no", else
/// [`Error::Probe`] (the probe could not run).
fn socket_error(what: String, source: std::io::Error) -> Error {
    if is_no_answer(&source) {
        Error::Unreachable { what, source }
    } else {
        Error::Probe {
            what: format!("could not probe: {what}"),
            source,
        }
    }
}

/// Reading a probe's result as "did it reach the target".
pub trait Reached {
    /// What the probe returns when it gets its answer.
    type Answer;

    /// `Ok(true)` when the probe got its answer, `Ok(false)` when the network said no
    /// ([`Error::Unreachable`]), and the error itself when the probe could not run: a "cannot
    /// reach" check written as `ensure!(!probe.reached()?)` fails loudly on a broken probe.
    fn reached(self) -> Result<bool>;

    /// [`Reached::reached`] that keeps the answer: `Ok(None)` when the network said no.
    fn answer(self) -> Result<Option<Self::Answer>>;
}

impl<T> Reached for Result<T> {
    type Answer = T;

    fn reached(self) -> Result<bool> {
        self.answer().map(|answer| answer.is_some())
    }

    fn answer(self) -> Result<Option<T>> {
        match self {
            Ok(answer) => Ok(Some(answer)),
            Err(err) if err.is_unreachable() => Ok(None),
            Err(err) => Err(err),
        }
    }
}

impl Netns {
    /// Pings `dst` `count` times, 0.2 s apart, waiting at most one second for each reply.
    ///
    /// `Ok` when ping ran, whether or not anything answered ([`PingResult::received`]); an
    /// error when it could not probe (see [`PingResult::from_output`]).
    pub fn ping(&self, dst: &str, count: u32) -> Result<PingResult> {
        let count = count.to_string();
        let argv = ["ping", "-n", "-c", &count, "-i", "0.2", "-W", "1", dst];
        let output = self.exec_output(&argv)?;
        PingResult::from_output(&argv.join(" "), &output)
    }

    /// Whether one ping to `dst` is answered within a second; an error when ping could not run.
    pub fn ping_once(&self, dst: &str) -> Result<bool> {
        Ok(self.ping(dst, 1)?.received > 0)
    }

    /// Opens a TCP connection to `dst` from inside the namespace, within `timeout`.
    /// [`Error::Unreachable`] when refused, unreachable or timed out; any other error means the
    /// probe could not run (see [`Reached`]).
    pub fn tcp_connect(&self, dst: SocketAddr, timeout: Duration) -> Result<()> {
        self.run_in(|| TcpStream::connect_timeout(&dst, timeout).map(drop))?
            .map_err(|source| {
                socket_error(format!("TCP connect from {} to {dst}", self.node), source)
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
        .map_err(|source| socket_error(format!("TCP request from {} to {dst}", self.node), source))
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
        .map_err(|source| socket_error(format!("UDP probe from {} to {dst}", self.node), source))
    }

    /// Whether the namespace has an interface named `name`, from `ip -o link show`. The
    /// listing must succeed: a missing `ip` or a namespace that is gone is an error, never a
    /// "no such interface".
    pub fn has_link(&self, name: &str) -> Result<bool> {
        let listing = self.exec(&["ip", "-o", "link", "show"])?;
        let found = link_names(&listing).any(|link| link == name);
        Ok(found)
    }

    /// Starts an echo server on `port` (TCP and UDP, all addresses) inside the namespace. Each
    /// TCP client and each UDP datagram is answered with one line: the source address the server
    /// saw, as `IP:PORT`. This is how a test proves SNAT.
    pub fn echo_server(&self, port: u16) -> Result<EchoServer> {
        EchoServer::start(self, port)
    }
}

/// The interface names of `ip -o link show`: one line a link, `3: enclave0: <…>`, with
/// `@PEER` after a veth's name.
fn link_names(listing: &str) -> impl Iterator<Item = &str> {
    listing
        .lines()
        .filter_map(|line| line.split(": ").nth(1)?.split('@').next())
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
        let name = ns.name().to_owned();
        let setup = move || -> Result<(TcpListener, UdpSocket)> {
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
        };
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            ns.start_thread(setup, move |(tcp, udp)| serve(&tcp, &udp, &stop, &seen))?
        };
        Ok(Self {
            stop,
            seen,
            thread: Some(thread),
        })
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
    use std::os::unix::process::ExitStatusExt;
    use std::process::{ExitStatus, Output};

    use super::{link_names, socket_error, PingResult, Reached};
    use crate::Error;

    fn output(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_ping_that_ran_without_answer_is_a_no() {
        let out = output(
            1,
            "2 packets transmitted, 0 received, 100% packet loss, time 1020ms\n",
            "",
        );
        let result = PingResult::from_output("ping", &out).expect("ping ran");
        assert_eq!(result.received, 0);
        let refused = output(2, "", "ping: connect: No route to host\n");
        assert_eq!(
            PingResult::from_output("ping", &refused)
                .expect("refused")
                .received,
            0
        );
    }

    #[test]
    fn a_ping_that_could_not_run_is_an_error() {
        for (code, stderr) in [
            (127, "sh: 1: exec: ping: not found"),
            (97, "mount: /run/wireguard: permission denied"),
            (2, "ping: socket: Operation not permitted"),
            (2, "ping: nonsense.invalid: Name or service not known"),
            // Exit 1 without a summary: not iputils' "no reply".
            (1, "exec of \"ping\" failed: No such file or directory"),
        ] {
            let err = PingResult::from_output("ping", &output(code, "", stderr)).expect_err(stderr);
            assert!(matches!(err, Error::ProbeTool { .. }), "{err}");
            assert!(err.to_string().contains("could not probe"), "{err}");
        }
        let killed = Output {
            status: ExitStatus::from_raw(9),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        assert!(PingResult::from_output("ping", &killed).is_err());
    }

    #[test]
    fn socket_errors_split_into_no_and_could_not_probe() {
        use std::io::ErrorKind as K;
        for kind in [
            K::ConnectionRefused,
            K::TimedOut,
            K::WouldBlock,
            K::HostUnreachable,
        ] {
            let err: crate::Result<()> = Err(socket_error("probe".into(), kind.into()));
            assert!(!err.reached().expect("the network's no"), "{kind:?}");
        }
        for kind in [K::AddrNotAvailable, K::InvalidInput, K::UnexpectedEof] {
            let err: crate::Result<()> = Err(socket_error("probe".into(), kind.into()));
            assert!(
                err.reached().is_err(),
                "{kind:?} must not read as unreachable"
            );
        }
        let ok: crate::Result<()> = Ok(());
        assert!(ok.reached().expect("answered"));
    }

    #[test]
    fn link_names_are_read_from_one_line_listings() {
        let listing = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN \\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n\
                       2: v-gw-lan@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue \\    link/ether 0a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff link-netns enc-1-lan\n\
                       5: enclave0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel \\    link/none \n";
        let names: Vec<&str> = link_names(listing).collect();
        assert_eq!(names, ["lo", "v-gw-lan", "enclave0"]);
        assert_eq!(link_names("").count(), 0);
    }

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

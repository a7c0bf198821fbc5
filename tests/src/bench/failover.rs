//! `cargo xtask bench failover`: how long traffic stops when the active gateway dies, and how
//! long a revoked grant keeps working, through our agents in the office fixture.
//!
//! A UDP stream from the laptop to an echo server on the LAN (one datagram every 5 ms) measures
//! the gap: from the kill (or the edit) to the first answer through the other gateway (or the
//! last answer before the revocation took effect).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::stats::spread;
use crate::office::{definition, users_granted, Office, ANY, PRINTER};
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "failover",
    about: "traffic gap when the active gateway is killed; time for a revoked grant to stop",
    run: failover,
};

const RUNS: usize = 5;

/// Answers received by a UDP stream, with their arrival times.
struct Stream {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(office: &Office<'_>, dst: SocketAddr) -> anyhow::Result<Stream> {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let bind = || -> anyhow::Result<_> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(5)))?;
            Ok(socket)
        };
        let send = {
            let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
            move |socket: UdpSocket| {
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    let _ = socket.send_to(b"tick", dst);
                    let until = Instant::now() + Duration::from_millis(5);
                    while Instant::now() < until {
                        if socket.recv_from(&mut buf).is_ok() {
                            answers
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Instant::now());
                        }
                    }
                }
            }
        };
        let thread = office
            .ns("sender")
            .start_thread(bind, send)
            .context("cannot start the UDP stream on the laptop")?;
        Ok(Stream {
            stop,
            answers,
            thread: Some(thread),
        })
    }

    fn last(&self) -> Option<Instant> {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .copied()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn failover(ctx: &Ctx) -> anyhow::Result<()> {
    // The printer holds the LAN host's primary address: the echo server's UDP answers leave from it.
    let dst: SocketAddr = format!("{PRINTER}:9999").parse()?;
    let mut gaps = Vec::new();
    let mut revokes = Vec::new();
    for run in 0..RUNS {
        let sub = Ctx::new(
            &format!("failover-{run}"),
            ctx.log_dir().join(format!("run{run}")),
            ctx.bin("enclave-agent")?
                .parent()
                .context("bin dir")?
                .to_owned(),
        );
        std::fs::create_dir_all(sub.log_dir())?;
        let granted = users_granted(2);
        let mut office = Office::start_reaching(&sub, &format!("fobench{run}"), 2, &granted, &[])?;
        let _echo = office.ns("lan").echo_server(9999)?;
        let probe = office.ns("sender").udp_probe(dst, Duration::from_secs(1));
        anyhow::ensure!(
            probe.is_ok(),
            "a UDP probe to {dst} got no answer: {probe:?}"
        );
        let stream = Stream::start(&office, dst)?;
        anyhow::ensure!(
            enclave_netns::wait_until(Duration::from_secs(3), || stream.last().is_some()),
            "the UDP stream got no answer before the kill"
        );
        std::thread::sleep(Duration::from_millis(300));
        let active = office.active_gateway().context("no active gateway")?;
        let node = if active == "menlo-gw-1" { "gw1" } else { "gw2" };
        let killed = Instant::now();
        office.agent(node)?.kill9();
        // Watch for 3 s: the outage is the longest silence between two answers from just
        // before the kill on, and the stream must be answering again at the end.
        std::thread::sleep(Duration::from_secs(3));
        let answers = stream
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let window: Vec<Instant> = answers
            .iter()
            .copied()
            .filter(|t| *t + Duration::from_millis(100) >= killed)
            .collect();
        anyhow::ensure!(
            window
                .last()
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200)),
            "traffic did not come back within 3 s of the kill"
        );
        let gap = window
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .context("too few answers to measure")?;
        gaps.push(gap.as_secs_f64() * 1000.0);

        // Revocation: the laptop loses its tag.
        anyhow::ensure!(
            enclave_netns::wait_until(Duration::from_secs(1), || stream
                .last()
                .is_some_and(|t| t.elapsed() < Duration::from_millis(8))),
            "the stream was not answering before the edit"
        );
        let edited = Instant::now();
        office.set_definition(&definition(2, "\"guests\"", ANY, ""))?;
        std::thread::sleep(Duration::from_secs(3));
        let last = stream.last().context("no answers")?;
        anyhow::ensure!(
            last.elapsed() > Duration::from_secs(1),
            "the revoked grant kept working"
        );
        revokes.push(last.saturating_duration_since(edited).as_secs_f64() * 1000.0);
        println!(
            "run {run}: failover gap {:.0} ms, revoked after {:.0} ms",
            gaps[run], revokes[run]
        );
    }
    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "measure (ms, over runs)", "median", "min", "max"
    );
    for (name, v) in [
        ("failover: gap after the active gateway dies", &gaps),
        ("revocation: last answer after the edit", &revokes),
    ] {
        let [min, median, max] = spread(v);
        println!("{name:<44} {median:>10.0} {min:>10.0} {max:>10.0}");
    }
    println!();
    println!("goals: failover < 1000 ms (Tailscale documents up to ~15 s); revocation < 1000 ms.");
    println!(
        "ratio to the goal (median / 1000 ms): failover {:.2}, revocation {:.2}",
        spread(&gaps)[1] / 1000.0,
        spread(&revokes)[1] / 1000.0
    );
    Ok(())
}

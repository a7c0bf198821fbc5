//! A generated network definition of any size, deterministic for a given seed; shared by the
//! benchmark and the tests.

use std::fmt::Write as _;

use enclave_testkit::TestRng;
use rand_core::Rng as _;

/// Draws from the shared seeded generator (`enclave-testkit`), so that no seed leaks in.
#[derive(Debug)]
pub struct Rng(TestRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(TestRng(seed))
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

/// A WireGuard-shaped public key (32 bytes, base64) unique to `i`.
pub fn key(i: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
    bytes[8] = 0xEC;
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Sizes of a generated definition.
#[derive(Debug)]
pub struct Size {
    pub systems: usize,
    pub gateways: usize,
    pub policies: usize,
    pub tags: usize,
}

/// The name of the `i`-th system; gateways come first.
pub fn system_name(i: usize, size: &Size) -> String {
    if i < size.gateways {
        format!("gw-{i}")
    } else {
        format!("host-{i}")
    }
}

/// Subnets of gateway `g`: one of its own and one it shares with its neighbour (failover).
fn gateway_subnets(g: usize) -> [String; 2] {
    [
        format!("10.{}.{}.0/24", g / 200, g % 200),
        format!("172.16.{}.0/24", g / 2),
    ]
}

/// Generates the definition's text.
pub fn definition(size: &Size, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::from("[network]\noverlay = \"100.64.0.0/10\"\n\n");
    for i in 0..size.systems {
        let name = system_name(i, size);
        let a = i + 10;
        let _ = writeln!(
            out,
            "[[system]]\nname = \"{name}\"\npublic_key = \"{}\"\naddress = \"100.{}.{}.{}\"",
            key(i),
            64 + a / 65536,
            (a / 256) % 256,
            a % 256
        );
        let tags: Vec<String> = (0..1 + rng.below(3))
            .map(|_| format!("\"t{}\"", rng.below(size.tags)))
            .collect();
        let _ = writeln!(out, "tags = [{}]", tags.join(", "));
        if i < size.gateways {
            let [own, shared] = gateway_subnets(i);
            let _ = writeln!(
                out,
                "endpoint = \"198.18.{}.{}:51820\"\n\n[system.gateway]\nallowed = true\n\
                 subnets = [\"{own}\", \"{shared}\"]\npriority = {}",
                i / 256,
                i % 256,
                rng.below(5) * 10
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "[[trust_requirement]]\nname = \"office\"\nkind = \"public_ip\"\nallow = [\"198.51.100.0/24\"]\n"
    );
    for p in 0..size.policies {
        let senders = format!(
            "\"t{}\", \"t{}\"",
            rng.below(size.tags),
            rng.below(size.tags)
        );
        if p % 5 == 4 {
            let _ = writeln!(
                out,
                "[[direct_policy]]\nname = \"direct-{p}\"\nsenders = [{senders}]\n\
                 receivers = [\"t{}\"]\nacl = [{{ protocol = \"tcp\", ports = 22 }}, {{ protocol = \"icmp\" }}]\n",
                rng.below(size.tags)
            );
            continue;
        }
        let g = rng.below(size.gateways);
        // The shared subnet is offered by both gateways of a pair.
        let pair = g ^ 1;
        let [own, shared] = gateway_subnets(g);
        let (gateways, subnets, filter) = if pair < size.gateways && p % 2 == 0 {
            let base = shared.trim_end_matches(".0/24").to_owned();
            (
                format!("\"gw-{g}\", \"gw-{pair}\""),
                format!("\"{shared}\""),
                format!("filter = [\"{base}.10-{base}.20\", \"{base}.128/28\"]\n"),
            )
        } else {
            (format!("\"gw-{g}\""), format!("\"{own}\""), String::new())
        };
        let trust = if p % 7 == 0 {
            "trust = [\"office\"]\n"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "[[gateway_policy]]\nname = \"gateway-{p}\"\nsenders = [{senders}]\ngateways = [{gateways}]\n\
             subnets = [{subnets}]\n{filter}{trust}acl = [{{ protocol = \"tcp\", ports = \"443\", label = \"https\" }}, \
             {{ protocol = \"udp\", ports = \"5000-5100\" }}, {{ protocol = \"icmp\" }}]\n"
        );
    }
    out
}

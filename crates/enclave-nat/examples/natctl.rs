//! Applies a small sample policy in the current namespace, for trying the backends by hand:
//! `natctl nft|legacy|nft-compat apply|reset|state [N]` (N extra destination entries).

use enclave_nat::{
    AddressSet, BackendChoice, Flavor, ForwardGrant, NatManager, NatPolicy, NftBackend, PortRange,
    Protocol,
};

fn policy(extra: u32) -> NatPolicy {
    let mut destinations = AddressSet::new().net("192.168.77.0/24".parse().unwrap());
    for i in 0..extra {
        let addr =
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + 2 * i);
        destinations = destinations.net(ipnet::Ipv4Net::new(addr, 32).unwrap());
    }
    let sample = NatPolicy::sample();
    NatPolicy {
        grants: vec![ForwardGrant {
            sources: AddressSet::new().net("100.64.0.0/24".parse().unwrap()),
            destinations,
            protocol: Some(Protocol::Tcp),
            ports: Some(PortRange {
                first: 80,
                last: 443,
            }),
            label: "web".into(),
        }],
        ..sample
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let choice = match args.get(1).map(String::as_str) {
        Some("nft") => BackendChoice::Nftables,
        Some("legacy") => BackendChoice::Iptables(Flavor::Legacy),
        Some("nft-compat") => BackendChoice::Iptables(Flavor::Nft),
        _ => BackendChoice::Auto,
    };
    let extra = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0);
    match args.get(2).map(String::as_str) {
        Some("apply") => {
            let mut manager = NatManager::new(choice, None)?;
            let start = std::time::Instant::now();
            manager.apply_policy(&policy(extra))?;
            println!(
                "{} applied in {:?}",
                manager.backend_name(),
                start.elapsed()
            );
        }
        Some("reset") => {
            let mut manager = NatManager::new(choice, None)?;
            manager.reset_policy()?;
        }
        _ => {
            let mut backend = NftBackend::new();
            enclave_nat::NatBackend::apply_policy(&mut backend, &policy(extra))?;
            for rule in backend.state()?.rules {
                println!("{rule:?}");
            }
        }
    }
    Ok(())
}

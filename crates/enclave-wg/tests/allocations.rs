//! The data path does not allocate: counted with a global allocator that
//! tallies every allocation made by the test's own thread (the test
//! harness's other threads may allocate at any time, on a loaded machine).

mod sim;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use enclave_wg::{encapsulated_len, Decapsulated, Encapsulated};
use sim::{ipv4_packet, overlay, Conditions, Net};

struct Counting;

thread_local! {
    // A const-initialised Cell needs no allocation and no destructor, so the
    // allocator may use it.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Two devices whose session has carried a packet each way (so both have confirmed it).
fn two_nodes_with_a_session(seed: u64) -> Net {
    let mut net = Net::mesh(2, Conditions::perfect(), seed);
    net.send_to(0, 1, b"handshake first");
    net.run_for(Duration::from_secs(1));
    net.send_to(1, 0, b"and back");
    net.run_for(Duration::from_secs(1));
    net
}

#[test]
fn sealing_and_opening_transport_packets_does_not_allocate() {
    let mut net = two_nodes_with_a_session(30);

    let packet = ipv4_packet(overlay(0), overlay(1), &[0xa5; 1400]);
    let mut wire = vec![0u8; encapsulated_len(packet.len())];
    let mut plain = vec![0u8; wire.len()];
    let (now, wall) = (net.now, net.wall());
    let from = net.nodes[0].addr;
    let [a, b] = &mut net.nodes[..] else {
        panic!("two nodes");
    };

    let before = allocations();
    for _ in 0..1000 {
        let Encapsulated::Send { len, .. } = a.device.encapsulate(&packet, now, wall, &mut wire)
        else {
            panic!("session is up");
        };
        let opened = b
            .device
            .decapsulate(from, &wire[..len], now, wall, &mut plain);
        assert!(matches!(opened, Decapsulated::Deliver { .. }));
    }
    let allocated = allocations() - before;
    assert_eq!(allocated, 0, "allocations on the data path");
}

#[test]
fn losses_and_reordering_allocate_once_per_session() {
    let mut net = two_nodes_with_a_session(31);

    let packet = ipv4_packet(overlay(0), overlay(1), &[0x5a; 200]);
    let len = encapsulated_len(packet.len());
    let (now, wall) = (net.now, net.wall());
    let from = net.nodes[0].addr;
    let [a, b] = &mut net.nodes[..] else {
        panic!("two nodes");
    };
    // Sealed beforehand: 1000 packets, delivered below with every tenth one late.
    let mut sealed = vec![vec![0u8; len]; 1000];
    for wire in &mut sealed {
        let Encapsulated::Send { len: sent, .. } = a.device.encapsulate(&packet, now, wall, wire)
        else {
            panic!("session is up");
        };
        assert_eq!(sent, len);
    }
    let mut order: Vec<usize> = (0..sealed.len()).collect();
    for pair in order.chunks_mut(10) {
        pair.rotate_left(1);
    }
    let mut plain = vec![0u8; len];

    let before = allocations();
    for &i in &order {
        let opened = b
            .device
            .decapsulate(from, &sealed[i], now, wall, &mut plain);
        assert!(matches!(opened, Decapsulated::Deliver { .. }), "packet {i}");
    }
    let allocated = allocations() - before;
    assert_eq!(allocated, 1, "the replay ring, once");
}

//! Loopback ports for servers that a parent process starts and then dials (the tests' clusters,
//! the dispatch benchmark).
//!
//! The usual trick, binding port 0 and closing the socket, hands out a port from the kernel's
//! ephemeral range: the same range every outbound connection takes its local port from. Between
//! the pick and the child's own bind, any connection made on the machine (a worker dialing etcd,
//! say) may take that port, and the child fails with "address in use". So the ports here are
//! taken below that range, where the kernel never puts an outbound connection, from a cursor
//! shared by the whole process so that two servers of one process never get the same port.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and most registered service ports. On a
/// machine whose ephemeral range starts below `LOWEST + 1000` the ports share that range, and
/// the race is back: Linux's default (32768) and the usual tunings leave the gap.
const LOWEST: u32 = 20_000;
/// Linux's default start of the ephemeral range, used where it cannot be read.
const DEFAULT_EPHEMERAL_START: u32 = 32_768;

/// How far the cursor has moved; the first port is spread by process id, so that processes
/// running side by side start in different places.
static CURSOR: AtomicU32 = AtomicU32::new(0);

/// A loopback TCP port that nothing listens on now and that no outbound connection will take
/// before a server binds it.
pub fn free_loopback_port() -> std::io::Result<u16> {
    let range = handed_out();
    let span = range.end - range.start;
    let start = std::process::id().wrapping_mul(7_919) % span;
    let candidates = (0..span).filter_map(|_| {
        let step = CURSOR.fetch_add(1, Ordering::Relaxed);
        u16::try_from(range.start + (start + step) % span).ok()
    });
    first_bindable(candidates).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("every loopback port in {range:?} is taken"),
        )
    })
}

/// The ports handed out: from `LOWEST` up to the ephemeral range (at least 1000 of them).
fn handed_out() -> std::ops::Range<u32> {
    LOWEST..ephemeral_start().max(LOWEST + 1_000)
}

/// The first candidate that a loopback listener can bind now.
fn first_bindable(mut candidates: impl Iterator<Item = u16>) -> Option<u16> {
    candidates.find(|&port| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok())
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50)
            .map(|_| free_loopback_port().expect("a port"))
            .collect();
        let ephemeral = ephemeral_start();
        for &p in &ports {
            let p32 = u32::from(p);
            assert!(p32 >= LOWEST, "{p} is under {LOWEST}");
            // where the machine leaves the gap (Linux's default does), no port is in the range
            if ephemeral >= LOWEST + 1_000 {
                assert!(
                    p32 < ephemeral,
                    "{p} is in the ephemeral range from {ephemeral}"
                );
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("the port is free");
        }
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a listener");
        let taken = held.local_addr().expect("its address").port();
        let next = free_loopback_port().expect("a port");
        assert_eq!(first_bindable([taken, next].into_iter()), Some(next));
        assert_eq!(first_bindable([taken].into_iter()), None);
    }
}

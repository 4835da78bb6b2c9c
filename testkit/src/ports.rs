//! Free loopback ports for servers the kit starts.
//!
//! Ports are taken from *below* the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), so an outgoing client connection can never be
//! handed a port that a server is about to bind, or that a killed server needs again on restart.
//! Each process walks that range from its own random starting point and never hands out the same
//! port twice; every candidate is checked by binding it on 127.0.0.1 first. Two processes can
//! still race for one port; the server starters retry on fresh ports when a bind fails.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// Lowest port the kit hands out.
const LOW: u16 = 20_000;
/// Used when the ephemeral range cannot be read.
const DEFAULT_EPHEMERAL_LOW: u16 = 32_768;

struct Allocator {
    low: u16,
    high: u16,
    cursor: AtomicU32,
    handed_out: Mutex<HashSet<u16>>,
}

fn allocator() -> &'static Allocator {
    static ALLOC: OnceLock<Allocator> = OnceLock::new();
    ALLOC.get_or_init(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(DEFAULT_EPHEMERAL_LOW);
        // If the ephemeral range starts unusually low, fall back to a fixed window below 32768.
        let (low, high) = if ephemeral_low > LOW + 1_000 {
            (LOW, ephemeral_low - 1)
        } else {
            (10_000, DEFAULT_EPHEMERAL_LOW - 1)
        };
        Allocator {
            low,
            high,
            cursor: AtomicU32::new(seed() % u32::from(high - low + 1)),
            handed_out: Mutex::new(HashSet::new()),
        }
    })
}

/// A per-process pseudo-random number: process id mixed with the clock.
fn seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // xorshift64* scramble
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
}

/// Returns a loopback TCP port that is free right now and that this process has not handed out
/// before.
///
/// Panics only if the whole port window (about 12,000 ports below the ephemeral range) is taken;
/// use [`try_free_port`] to get an error instead.
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(p) => p,
        Err(e) => panic!("testkit::free_port: {e}"),
    }
}

/// Like [`free_port`], but returns an error when no port is free.
pub fn try_free_port() -> Result<u16> {
    let a = allocator();
    let span = u32::from(a.high - a.low + 1);
    for _ in 0..span {
        let n = a.cursor.fetch_add(1, Ordering::Relaxed) % span;
        let port = a.low + n as u16;
        {
            let mut taken = a
                .handed_out
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if taken.contains(&port) {
                continue;
            }
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
                continue;
            }
            taken.insert(port);
        }
        return Ok(port);
    }
    Err(Error::io(
        format!("looking for a free loopback port in {}..={}", a.low, a.high),
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "every port is in use"),
    ))
}

/// Returns `n` distinct free ports (see [`free_port`]).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    (0..n).map(|_| try_free_port()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(50).expect("ports");
        let set: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(set.len(), 50);
        for p in ports {
            assert!(p >= allocator().low && p <= allocator().high);
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("bindable");
        }
    }
}

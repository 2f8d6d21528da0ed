//! Where a network restore target is: its addresses, resolved once, and whether the
//! connection stays on this machine (the condition for sending a password in clear).
//! Resolving once and connecting to exactly what was checked means a name that resolves
//! differently the second time cannot turn a checked loopback connection into a remote one.

use std::net::{SocketAddr, ToSocketAddrs};

/// The addresses of `host:port`, resolved once: connect to these, not to the name again.
pub(crate) fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

/// Whether every address is a loopback one (none: false).
pub(crate) fn all_loopback(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_every_address_on_this_machine() {
        assert!(all_loopback(&resolve("127.0.0.1", 1).unwrap()));
        assert!(all_loopback(&resolve("::1", 1).unwrap()));
        assert!(!all_loopback(&resolve("192.0.2.1", 1).unwrap()));
        assert!(!all_loopback(&[]));
    }
}

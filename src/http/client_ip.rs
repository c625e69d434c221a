//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the nearest
//! address in `X-Forwarded-For` that is not one of the trusted proxies. A client cannot choose
//! its address by sending the header itself: from an untrusted peer the header is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use ipnet::IpNet;

use super::AppState;
use crate::error::AppError;

/// Where a request comes from, for per-address limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The client address of a request from `peer` with these headers.
pub fn resolve(parts: &Parts, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Each proxy appends the address it got the request from; read from the right and stop at
    // the first hop that is not ours. An unparsable entry ends the walk where it stands.
    let mut client = peer;
    let hops = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no peer address recorded")))?;
        Ok(ClientIp(resolve(
            parts,
            peer,
            &state.config.throttle.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(xff: &str) -> Parts {
        let req = axum::http::Request::builder()
            .header("x-forwarded-for", xff)
            .body(())
            .unwrap();
        req.into_parts().0
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy_and_skips_trusted_hops() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let p = parts("203.0.113.9, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            resolve(&p, proxy, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(resolve(&p, stranger, &trusted), stranger);
        assert_eq!(resolve(&parts("junk"), proxy, &trusted), proxy);
    }
}

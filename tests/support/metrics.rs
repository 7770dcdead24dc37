//! Reading a daemon's Prometheus endpoint in the suites.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

/// `GET /metrics` from `addr` over a plain TCP connection: the whole
/// response (status line and headers included), or `None` while nothing
/// listens there yet.
pub fn scrape(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: spool\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of the sample `name` in `metrics`: a bare name matches the
/// sample without labels, `name{label="..."}` the one with exactly those.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

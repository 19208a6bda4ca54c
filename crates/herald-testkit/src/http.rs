//! A plain HTTP/1.1 request to a server of the test's own on loopback, waiting (up to 20 s)
//! for it to accept connections: what a user's `curl` does, with no client library.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `METHOD path` to `addr` and returns the status code and the body. A connection
/// refused, or reset before any answer (a server that is still starting: its socket takes
/// connections before it serves them), is tried again every 100 ms, as `curl --retry`
/// does; a server that has died ends up refusing, and the 20 s deadline fails the test.
///
/// # Panics
///
/// When nothing answers on `addr` within 20 s.
pub fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let raw = loop {
        let tried = TcpStream::connect(addr).and_then(|mut stream| {
            stream.write_all(req.as_bytes())?;
            let mut raw = String::new();
            stream.read_to_string(&mut raw)?;
            Ok(raw)
        });
        match tried {
            Ok(raw) if !raw.is_empty() => break raw,
            Ok(_) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok(_) => panic!("{addr} closed every connection without an answer"),
            Err(e) => panic!("{addr} never answered: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// The body of `GET path`.
///
/// # Panics
///
/// As [`request`].
pub fn get(addr: &str, path: &str) -> String {
    request(addr, "GET", path).1
}

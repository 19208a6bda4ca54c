//! A plain HTTP/1.1 request to a server of the test's own on loopback, waiting (up to 20 s)
//! for it to accept connections: what a user's `curl` does, with no client library.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `METHOD path` to `addr` and returns the status code and the body.
///
/// # Panics
///
/// When nothing accepts on `addr` within 20 s, or the connection fails midway.
pub fn request(addr: &str, method: &str, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("{addr} never answered: {e}"),
        }
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).expect("send the request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the answer");
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

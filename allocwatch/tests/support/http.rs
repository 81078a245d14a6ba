//! `allocwatch daemon` from the tests: started, and read over HTTP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::proc::Proc;

/// Starts `cmd` (an `allocwatch daemon` command line, perhaps behind a
/// wrapper that execs it) and waits until it serves: the process (stderr
/// read line by line) and the address it bound.
pub fn start_daemon_cmd(cmd: Command) -> (Proc, SocketAddr) {
    start_daemon_cmd_within(cmd, Duration::from_secs(60))
}

/// [`start_daemon_cmd`], waiting up to `timeout` (it serves once every
/// process given is attached).
pub fn start_daemon_cmd_within(cmd: Command, timeout: Duration) -> (Proc, SocketAddr) {
    let mut d = Proc::spawn(cmd, "allocwatch daemon", true);
    let line = d
        .out
        .wait_for(timeout, |l| l.contains("serving http://"))
        .unwrap_or_else(|| panic!("the daemon never served: {:?}", d.out.seen));
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (d, addr)
}

/// `GET path` over HTTP/1.1: the status and the body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the test reads whole bodies only: {head}"
    );
    (status, raw[split + 4..].to_vec())
}

/// `GET path`, asserting 200, as text.
pub fn get_text(addr: SocketAddr, path: &str) -> String {
    let (status, body) = get(addr, path);
    let body = String::from_utf8(body).expect("utf-8 body");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

//! A running `flowcam-pipeline serve` for the dashboard's tests, and plain HTTP to it.

use super::bin;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};

/// A running `serve`, stopped when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(root: &Path, out: &Path) -> Server {
        Server::start_with(root, out, &[])
    }

    pub fn start_with(root: &Path, out: &Path, extra: &[&str]) -> Server {
        Server::start_env(root, out, extra, &[])
    }

    /// With `vars` in its environment (e.g. the orders' token).
    pub fn start_env(root: &Path, out: &Path, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        let mut child = bin()
            .args([
                "serve",
                "-d",
                root.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .args(["--listen", "127.0.0.1:0", "--settle-seconds", "0"])
            .args(extra)
            .envs(vars.iter().copied())
            .current_dir(root)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .rsplit_once("http://")
            .map(|(_, a)| a.trim_end_matches('/').to_string())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Server { child, address }
    }

    /// Stops it with SIGTERM and waits: its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap().code()
    }

    /// `GET target`: (status, headers lowercased, body).
    pub fn get(&self, target: &str) -> (u16, String, Vec<u8>) {
        self.request("GET", target, &[], b"")
    }

    /// Any request: (status, headers lowercased, body).
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.address
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method != "GET" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response");
        let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
        let status = head[9..12].parse().unwrap();
        let mut body = response[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, head, body)
    }

    pub fn page(&self, target: &str) -> String {
        let (status, _, body) = self.get(target);
        assert_eq!(status, 200, "{target}");
        String::from_utf8(body).unwrap()
    }

    pub fn json(&self, target: &str) -> Value {
        let (status, head, body) = self.get(target);
        assert_eq!(status, 200, "{target}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("cache-control: no-store"), "{head}");
        serde_json::from_slice(&body).unwrap()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
}

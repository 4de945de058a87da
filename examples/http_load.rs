//! A small HTTP load generator for `scripts/bench.sh` (loopback only):
//!
//! ```text
//! http_load load ADDRESS PATH CLIENTS REQUESTS   CLIENTS threads, each REQUESTS GETs in turn
//! http_load page ADDRESS PATH                    one page, then every <img src> on it, six
//!                                                at a time (as a browser does)
//! ```
//!
//! Prints one line of figures: requests, requests per second, p50 and p99 latency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn get(address: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let status = String::from_utf8_lossy(&response[9..12])
        .parse()
        .unwrap_or(0);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |i| i + 4);
    (status, response[split..].to_vec())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>, wall: Duration, failed: usize) {
    times.sort();
    println!(
        "{what}: {} requests in {:.2} s = {:.0} requests/s, p50 {:.1} ms, p99 {:.1} ms, {failed} not 200",
        times.len(),
        wall.as_secs_f64(),
        times.len() as f64 / wall.as_secs_f64(),
        percentile(&times, 0.50),
        percentile(&times, 0.99),
    );
}

/// Runs `paths` over `clients` threads, each taking the next path in turn.
fn fetch_all(address: &str, paths: &[String], clients: usize) -> (Vec<Duration>, usize) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new((Vec::new(), 0usize));
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let t0 = Instant::now();
                    let (status, _) = get(address, path);
                    let took = t0.elapsed();
                    let mut r = results.lock().unwrap();
                    r.0.push(took);
                    r.1 += (status != 200) as usize;
                }
            });
        }
    });
    results.into_inner().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["load", address, path, clients, requests] => {
            let clients: usize = clients.parse().expect("CLIENTS");
            let requests: usize = requests.parse().expect("REQUESTS");
            let paths = vec![path.to_string(); clients * requests];
            let t0 = Instant::now();
            let (times, failed) = fetch_all(address, &paths, clients);
            report(
                &format!("{path} x{clients} clients"),
                times,
                t0.elapsed(),
                failed,
            );
        }
        ["page", address, path] => {
            let t0 = Instant::now();
            let (status, body) = get(address, path);
            let page = t0.elapsed();
            let html = String::from_utf8_lossy(&body);
            let images: Vec<String> = html
                .split("<img src=\"")
                .skip(1)
                .filter_map(|s| s.split('"').next())
                .map(|s| s.replace("&amp;", "&"))
                .collect();
            let t1 = Instant::now();
            let (times, failed) = fetch_all(address, &images, 6);
            let all = t0.elapsed();
            println!(
                "{path}: page {:.1} ms (status {status}), {} images in {:.1} ms ({failed} not 200), \
                 page and images {:.1} ms",
                page.as_secs_f64() * 1000.0,
                images.len(),
                t1.elapsed().as_secs_f64() * 1000.0,
                all.as_secs_f64() * 1000.0
            );
            let _ = times;
        }
        _ => {
            eprintln!(
                "usage: http_load load ADDRESS PATH CLIENTS REQUESTS | http_load page ADDRESS PATH"
            );
            std::process::exit(2);
        }
    }
}

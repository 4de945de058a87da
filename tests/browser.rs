//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! Debian packages `chromium` and `chromium-driver`, which `scripts/test.sh` installs) opens
//! the list, follows a session, sees its plots, opens its gallery and waits until every
//! thumbnail has loaded, then saves a screenshot. All on 127.0.0.1.

mod common;

use common::serve::Server;
use common::{FIXTURE, copy_fixture, run_bin, text};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange with a JSON body, on a fresh connection.
fn http(address: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line[9..12].parse().unwrap();
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.unwrap_or(0)];
    reader.read_exact(&mut body).unwrap();
    (status, body)
}

/// A WebDriver session on a running chromedriver.
struct Browser {
    driver: String,
    session: String,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, bytes) = http(&self.driver, method, &path, body.as_ref());
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes))
        });
        assert_eq!(status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn click(&self, css: &str) {
        let element = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        let id = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {element}"))
            .to_string();
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Polls `script` until it returns true.
    fn wait_for(&self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.script(script) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(&self.driver, "DELETE", &path, None);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> (Running, String) {
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
        "the browser test needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install \
         chromium chromium-driver; scripts/test.sh installs them when it runs as root)"
    );
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(&driver).is_ok() {
            let (status, body) = http(&driver, "GET", "/status", None);
            let ready: Value = serde_json::from_slice(&body).unwrap_or_default();
            if status == 200 && ready["value"]["ready"] == json!(true) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Running(child), driver)
}

#[test]
fn a_browser_follows_a_session_to_its_plots_and_a_gallery_whose_images_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&root).unwrap();
    let session = copy_fixture(&root, FIXTURE);
    let output = run_bin(&[
        "-d",
        session.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-upload",
        "-q",
    ]);
    assert!(output.status.success(), "{}", text(&output));

    let server = Server::start(&root, &out);
    let site = format!("http://{}", server.address);

    let (_driver, driver) = start_driver();
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }
    }}});
    let (status, body) = http(&driver, "POST", "/session", Some(&capabilities));
    let created: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{created}");
    let browser = Browser {
        driver: driver.clone(),
        session: created["value"]["sessionId"].as_str().unwrap().to_string(),
    };

    // The list, then the session by its link.
    browser.go(&format!("{site}/"));
    assert_eq!(
        browser.script("return document.querySelectorAll('#sessions tbody tr').length"),
        json!(1)
    );
    browser.click(&format!("a[href='/sessions/{FIXTURE}']"));
    browser.wait_for(
        &format!("return location.pathname === '/sessions/{FIXTURE}'"),
        "the session page",
    );
    // Its three plots, drawn with bars.
    assert_eq!(
        browser.script("return document.querySelectorAll('svg.plot').length"),
        json!(3)
    );
    let bars = browser.script("return document.querySelectorAll('svg.plot rect').length");
    assert!(bars.as_u64().unwrap() > 30, "{bars}");
    let plot_width =
        browser.script("return document.querySelector('svg.plot').getBoundingClientRect().width");
    assert!(plot_width.as_f64().unwrap() > 100.0, "{plot_width}");

    // The gallery: every thumbnail loaded (natural width > 0).
    browser.click("#gallery-link");
    browser.wait_for(
        "const images = [...document.querySelectorAll('#gallery img')];\
         images.forEach(i => i.loading = 'eager');\
         return images.length === 100 && images.every(i => i.complete && i.naturalWidth > 0)",
        "100 thumbnails to load",
    );
    let widths = browser
        .script("return [...document.querySelectorAll('#gallery img')].map(i => i.naturalWidth)");
    assert!(
        widths
            .as_array()
            .unwrap()
            .iter()
            .all(|w| (1..=128).contains(&w.as_u64().unwrap())),
        "{widths}"
    );

    // A screenshot, kept beside the test binaries.
    let shot = browser.call("GET", "/screenshot", None);
    let png = base64_decode(shot.as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(folder.join("gallery.png"), &png).unwrap();
    assert!(png.len() > 10_000, "{} bytes", png.len());
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

//! `serve`'s orders over HTTP on 127.0.0.1, with the real binary: validation (every problem
//! at once, traversal in every field and URL), the token, pipeline, task and region orders,
//! a restart with queued and running orders, idempotent retries, callbacks, and an order
//! that waits while another run holds its session.

mod common;

use common::serve::Server;
use common::{FIXTURE, copy_fixture, run_bin, text};
use flowcam_pipeline::synthetic::SyntheticSession;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "orders-test-token-0123456789";
const PAGE: &str = "19_10_Tank25_blanksremoved_images_000009.tif";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn serve(root: &Path, out: &Path) -> Server {
    Server::start_env(root, out, &[], &[("FLOWCAM_SERVE_TOKEN", TOKEN)])
}

/// `POST /api/orders` with the token (and a key): (status, headers, JSON answer).
fn post(server: &Server, order: &Value, key: Option<&str>) -> (u16, String, Value) {
    let bearer = bearer();
    let mut headers = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    let (status, head, body) = server.request(
        "POST",
        "/api/orders",
        &headers,
        order.to_string().as_bytes(),
    );
    (status, head, serde_json::from_slice(&body).unwrap())
}

/// `GET target` with the token.
fn get(server: &Server, target: &str) -> (u16, Vec<u8>) {
    let bearer = bearer();
    let (status, _, body) = server.request("GET", target, &[("Authorization", &bearer)], b"");
    (status, body)
}

fn order(server: &Server, id: u64) -> Value {
    let (status, body) = get(server, &format!("/api/orders/{id}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Polls order `id` until `done` says so (60 s at most).
fn wait_until(server: &Server, id: u64, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let record = order(server, id);
        if done(&record) {
            return record;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "order {id} stuck: {record}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn finished(record: &Value) -> bool {
    matches!(record["state"].as_str(), Some("succeeded" | "failed"))
}

fn accepted(server: &Server, order: &Value) -> u64 {
    let (status, head, answer) = post(server, order, None);
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_u64().unwrap();
    assert!(
        head.contains(&format!("location: /api/orders/{id}")),
        "{head}"
    );
    assert_eq!(answer["state"], "queued");
    id
}

fn root_with_fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_fixture(&root, FIXTURE);
    (root, dir.join("out"))
}

fn vignette_bytes(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = common::vignette_files(folder)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn orders_need_the_token_and_are_off_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    let order = json!({"task": "FlowCamPipeline", "session": FIXTURE});

    let off = Server::start(&root, &out);
    let (status, _, body) = off.request("POST", "/api/orders", &[], order.to_string().as_bytes());
    assert_eq!(status, 403);
    assert!(String::from_utf8_lossy(&body).contains("FLOWCAM_SERVE_TOKEN"));
    assert_eq!(off.get("/api/orders/1").0, 403);
    drop(off);
    assert!(!out.join(".orders").exists(), "no store without orders");

    let server = serve(&root, &out);
    for authorization in [
        None,
        Some("Bearer wrong-token-wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        let headers: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (status, head, body) = server.request(
            "POST",
            "/api/orders",
            &headers,
            order.to_string().as_bytes(),
        );
        assert_eq!(status, 401, "{authorization:?}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        assert!(!String::from_utf8_lossy(&body).contains(TOKEN));
        for target in ["/api/orders", "/api/orders/1", "/api/orders/1/files/x.tif"] {
            assert_eq!(
                server.request("GET", target, &headers, b"").0,
                401,
                "{target}"
            );
        }
    }
    let (status, body) = get(&server, "/api/orders");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!([]));
    // The token is in no page or answer.
    for target in ["/", "/api/sessions", &format!("/sessions/{FIXTURE}")] {
        let (_, head, body) = server.get(target);
        assert!(!head.contains(TOKEN) && !String::from_utf8_lossy(&body).contains(TOKEN));
    }
    // A token too short to protect anything is refused at start.
    let short = common::bin()
        .args([
            "serve",
            "-d",
            root.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .args(["--listen", "127.0.0.1:0"])
        .env("FLOWCAM_SERVE_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(4), "{}", text(&short));
    assert!(text(&short).contains("at least 16"), "{}", text(&short));
    assert!(!text(&short).contains("short\n"));
}

#[test]
fn every_problem_of_an_order_is_named_at_once_and_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    // Things outside the root that an order must never reach.
    let outside = dir.path().join("outside");
    copy_fixture(&outside, "Elsewhere");
    std::fs::write(outside.join("sheet.csv"), "session,latitude\nx,1\n").unwrap();
    std::os::unix::fs::symlink(outside.join("Elsewhere"), root.join("Linked")).unwrap();
    std::os::unix::fs::symlink(outside.join("sheet.csv"), root.join("sheet.csv")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("Elsewhere").join(PAGE),
        root.join(FIXTURE).join("linked_000001.tif"),
    )
    .unwrap();
    let server = serve(&root, &out);

    let (status, _, answer) = post(
        &server,
        &json!({
            "task": "DecollageImages",
            "session": FIXTURE,
            "parameters": {"blanks": "sometimes", "embed-measurements": "yes", "colour": 1},
            "callback": "file:///etc/passwd",
            "priority": 9,
        }),
        None,
    );
    assert_eq!(status, 422);
    let errors = answer["errors"].to_string();
    for expected in [
        "unknown key `priority`",
        "`callback` must be an http or https URL",
        "parameter `blanks`",
        "parameter `embed-measurements`",
        "parameter `colour` is not declared for DecollageImages",
    ] {
        assert!(errors.contains(expected), "{expected} not in {errors}");
    }
    assert_eq!(answer["errors"].as_array().unwrap().len(), 5, "{errors}");

    let (status, _, answer) = post(
        &server,
        &json!({"roi": {"session": FIXTURE, "collage": PAGE, "x": 2000, "y": -3, "width": 100, "height": 0, "depth": 1}}),
        None,
    );
    assert_eq!(status, 422);
    let errors = answer["errors"].to_string();
    for expected in [
        "unknown key `roi.depth`",
        "`roi.y` must be a whole number",
        "`width` and `height` must be at least 1",
    ] {
        assert!(errors.contains(expected), "{expected} not in {errors}");
    }
    let (status, _, answer) = post(
        &server,
        &json!({"roi": {"session": FIXTURE, "collage": PAGE, "x": 2000, "y": 400, "width": 100, "height": 100}}),
        None,
    );
    assert_eq!(status, 422);
    let errors = answer["errors"].to_string();
    assert!(errors.contains("past the page's width of 2037"), "{errors}");
    assert!(errors.contains("past the page's height of 456"), "{errors}");

    // Traversal in every field: names are looked up, never joined.
    let attempts = [
        (
            json!({"task": "FlowCamPipeline", "session": "../root"}),
            "not a plain name",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": "/etc"}),
            "not a plain name",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": ".."}),
            "not a plain name",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": format!("{FIXTURE}/..")}),
            "not a plain name",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": "Linked"}),
            "no session Linked",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": "Elsewhere"}),
            "no session Elsewhere",
        ),
        (
            json!({"task": "../../bin/sh", "session": FIXTURE}),
            "`task` must be one of",
        ),
        (
            json!({"task": "ExtractMetadata", "session": FIXTURE, "parameters": {"sample-sheet": "../outside/sheet.csv"}}),
            "without `..`",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": FIXTURE, "parameters": {"sample-sheet": "/etc/passwd"}}),
            "without `..`",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": FIXTURE, "parameters": {"sample-sheet": "sheet.csv"}}),
            "leads out of the root",
        ),
        (
            json!({"roi": {"session": FIXTURE, "collage": "../../outside/Elsewhere/x.tif", "x": 0, "y": 0, "width": 1, "height": 1}}),
            "not a plain name",
        ),
        (
            json!({"roi": {"session": FIXTURE, "collage": format!("{FIXTURE}.lst"), "x": 0, "y": 0, "width": 1, "height": 1}}),
            "not a collage page",
        ),
        (
            json!({"roi": {"session": FIXTURE, "collage": "linked_000001.tif", "x": 0, "y": 0, "width": 1, "height": 1}}),
            "not a regular file",
        ),
        (
            json!({"task": "FlowCamPipeline", "session": "a\u{0}b"}),
            "not a plain name",
        ),
    ];
    for (attempt, expected) in attempts {
        let (status, _, answer) = post(&server, &attempt, None);
        assert_eq!(status, 422, "{attempt}");
        assert!(
            answer["errors"].to_string().contains(expected),
            "{attempt}: {answer}"
        );
        assert!(
            !answer.to_string().contains(dir.path().to_str().unwrap()),
            "{answer}"
        );
    }
    // An order cannot send the session (and the service's keys) elsewhere.
    let (status, _, answer) = post(
        &server,
        &json!({"task": "UploadToS3", "session": FIXTURE, "parameters": {"s3-endpoint": "http://127.0.0.1:9", "s3-bucket": "theirs", "api-url": "http://169.254.169.254/"}}),
        None,
    );
    assert_eq!(status, 422);
    assert_eq!(
        answer["errors"]
            .to_string()
            .matches("cannot choose the destination")
            .count(),
        3,
        "{answer}"
    );
    for (body, expected) in [
        (
            &br#"{"task": "FlowCamPipeline", "session": "nope", "session": "19_10_Tank25_blanksremoved"}"#[..],
            "the key `session` appears twice",
        ),
        (&b"not json"[..], "not valid JSON"),
        (b"[1, 2]", "is a JSON object"),
        (b"{}", "needs `task`"),
    ] {
        let bearer = bearer();
        let (status, _, answer) =
            server.request("POST", "/api/orders", &[("Authorization", &bearer)], body);
        assert_eq!(status, 422);
        assert!(String::from_utf8_lossy(&answer).contains(expected));
    }
    let bearer = bearer();
    let (status, _, _) = server.request(
        "POST",
        "/api/orders",
        &[("Authorization", &bearer)],
        &vec![b' '; 100 * 1024],
    );
    assert_eq!(status, 413);
    for target in [
        "/api/orders/..%2F..%2Fetc%2Fpasswd",
        "/api/orders/1/files/..%2F..%2F.orders%2Forders.redb",
        "/api/orders/-1",
    ] {
        assert_eq!(get(&server, target).0, 404, "{target}");
    }
    let (_, body) = get(&server, "/api/orders");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!([]));
}

#[test]
fn pipeline_and_task_orders_make_what_the_command_line_makes() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    let server = serve(&root, &out);
    let id = accepted(
        &server,
        &json!({"task": "FlowCamPipeline", "session": FIXTURE, "parameters": {"blanks": "keep"}}),
    );
    let done = wait_until(&server, id, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"]["outcome"], "ran");
    let tables = done["result"]["tables"]["files"].to_string();
    assert!(
        tables.contains(&format!("{FIXTURE}/manifest.csv")),
        "{tables}"
    );
    assert!(!done.to_string().contains(dir.path().to_str().unwrap()));

    // The same vignettes as the command line's.
    let cli_out = dir.path().join("cli");
    let cli = |extra: &[&str]| {
        let mut args = vec![
            "-d",
            root.join(FIXTURE).to_str().unwrap().to_string().leak(),
        ];
        args.extend([
            "-o",
            cli_out.to_str().unwrap(),
            "--no-upload",
            "-q",
            "--force",
        ]);
        args.extend(extra);
        let output = run_bin(&args);
        assert!(output.status.success(), "{}", text(&output));
    };
    cli(&["--blanks", "keep"]);
    let ours = vignette_bytes(&out.join(FIXTURE).join("vignettes"));
    assert_eq!(ours.len(), 102);
    assert_eq!(
        ours,
        vignette_bytes(&cli_out.join(FIXTURE).join("vignettes"))
    );

    // One task alone, with a parameter of its own, through the operation bridge.
    let id = accepted(
        &server,
        &json!({"task": "DecollageImages", "session": FIXTURE, "parameters": {"embed-measurements": false}}),
    );
    let done = wait_until(&server, id, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["outputs"]["vignettes"]["count"], 102);
    cli(&["--blanks", "flag", "--no-embed-measurements"]);
    assert_eq!(
        vignette_bytes(&out.join(FIXTURE).join("vignettes")),
        vignette_bytes(&cli_out.join(FIXTURE).join("vignettes"))
    );
    // The dashboard sees both runs.
    let session = server.json(&format!("/api/sessions/{FIXTURE}"));
    assert!(session["runs"].as_array().unwrap().len() >= 2, "{session}");

    // A task whose inputs are not there yet fails with the bridge's own words.
    let bare = copy_fixture(&root, "Bare_54.0143_-2.7770_04052023_1");
    let id = accepted(
        &server,
        &json!({"task": "ExportEcoTaxa", "session": "Bare_54.0143_-2.7770_04052023_1"}),
    );
    let done = wait_until(&server, id, finished);
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["errors"].to_string().contains("input `manifest`"),
        "{done}"
    );
    assert!(
        !done.to_string().contains(dir.path().to_str().unwrap()),
        "{done}"
    );
    assert!(bare.join(format!("{FIXTURE}.lst")).is_file());

    // An upload ordered from a service without a destination fails, saying so.
    let id = accepted(&server, &json!({"task": "UploadToS3", "session": FIXTURE}));
    let done = wait_until(&server, id, finished);
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["errors"].to_string().contains("the service has none"),
        "{done}"
    );
}

#[test]
fn a_region_order_is_the_collage_pixels_with_the_session_exif() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    let server = serve(&root, &out);
    let id = accepted(
        &server,
        &json!({"task": "FlowCamPipeline", "session": FIXTURE}),
    );
    assert_eq!(wait_until(&server, id, finished)["state"], "succeeded");

    let (x, y, width, height) = (1737u32, 20u32, 300u32, 436u32);
    let id = accepted(
        &server,
        &json!({"roi": {"session": FIXTURE, "collage": PAGE, "x": x, "y": y, "width": width, "height": height}}),
    );
    let done = wait_until(&server, id, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
    let file = &done["result"]["files"][0];
    let url = file["url"].as_str().unwrap();
    let (status, bytes) = get(&server, url);
    assert_eq!(status, 200);
    assert_eq!(file["bytes"].as_u64().unwrap(), bytes.len() as u64);

    let decode = |bytes: Vec<u8>| {
        let mut decoder = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)).unwrap();
        let (w, h) = decoder.dimensions().unwrap();
        let tiff::decoder::DecodingResult::U8(pixels) = decoder.read_image().unwrap() else {
            panic!("8-bit pixels")
        };
        (w, h, pixels)
    };
    let (w, h, pixels) = decode(bytes.clone());
    assert_eq!((w, h), (width, height));
    let (page_w, _, page) = decode(std::fs::read(root.join(FIXTURE).join(PAGE)).unwrap());
    let channels = page.len() / (page_w as usize * 456);
    let mut expected = Vec::new();
    for row in y..y + height {
        let start = (row * page_w + x) as usize * channels;
        expected.extend_from_slice(&page[start..start + width as usize * channels]);
    }
    assert_eq!(pixels, expected, "the region's pixels are the page's");

    let exif = exif::Reader::new()
        .read_from_container(&mut std::io::Cursor::new(&bytes))
        .unwrap();
    let field = |tag| {
        exif.get_field(tag, exif::In::PRIMARY)
            .map(|f| f.display_value().to_string())
            .unwrap_or_default()
    };
    assert!(field(exif::Tag::Make).contains("Fluid Imaging Technologies"));
    assert!(field(exif::Tag::Model).contains("FlowCam"));
    assert!(!field(exif::Tag::XResolution).is_empty());
    let description = field(exif::Tag::ImageDescription);
    assert!(
        description.contains(PAGE) && description.contains("1737"),
        "{description}"
    );

    // Only the files the result lists are served.
    for target in [
        format!("/api/orders/{id}/files/..%2F..%2F.orders%2Forders.redb"),
        format!("/api/orders/{id}/files/orders.redb"),
        format!(
            "/api/orders/{}/files/{}",
            id + 7,
            file["name"].as_str().unwrap()
        ),
    ] {
        assert_eq!(get(&server, &target).0, 404, "{target}");
    }
}

/// A root of a large synthetic session and two small ones.
fn busy_root(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    SyntheticSession {
        particles: 12_000,
        pages: 24,
        prefix: "Big".into(),
        seed: 7,
        ..SyntheticSession::default()
    }
    .write(&root)
    .unwrap();
    for name in [
        "A_54.0143_-2.7770_04052023_1",
        "B_54.0143_-2.7770_04052023_1",
    ] {
        copy_fixture(&root, name);
    }
    (root, dir.join("out"))
}

fn runs(out: &Path, session: &str) -> usize {
    std::fs::read_dir(out.join(session).join("runs"))
        .map(|e| e.count())
        .unwrap_or(0)
}

#[test]
fn a_killed_service_loses_no_order_and_runs_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = busy_root(dir.path());
    let server = serve(&root, &out);
    let big = accepted(
        &server,
        &json!({"task": "FlowCamPipeline", "session": "Big"}),
    );
    let small: Vec<u64> = [
        "A_54.0143_-2.7770_04052023_1",
        "B_54.0143_-2.7770_04052023_1",
    ]
    .iter()
    .map(|s| accepted(&server, &json!({"task": "FlowCamPipeline", "session": s})))
    .collect();
    let roi = accepted(
        &server,
        &json!({"roi": {"session": "A_54.0143_-2.7770_04052023_1", "collage": PAGE, "x": 0, "y": 0, "width": 8, "height": 8}}),
    );
    // Killed (SIGKILL) while the large session runs and the others wait.
    wait_until(&server, big, |r| {
        // Several pages (500 vignettes each, a folder per page) are done.
        r["state"] == "running"
            && out.join("Big").join("vignettes").read_dir().is_ok_and(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
                    > 4
            })
    });
    for id in small.iter().chain([&roi]) {
        assert_eq!(order(&server, *id)["state"], "queued");
    }
    drop(server);

    let server = serve(&root, &out);
    let done = wait_until(&server, big, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "taken up once more after the restart: {done}"
    );
    let decollage = done["result"]["report"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "DecollageImages")
        .cloned()
        .unwrap();
    let items = &decollage["items"];
    eprintln!("resumed DecollageImages: {items}");
    assert_eq!(items["failed"], 0);
    assert!(
        items["skipped"].as_u64().unwrap() > 0,
        "pages done before the kill are not redone: {items}"
    );
    assert_eq!(
        items["ran"].as_u64().unwrap() + items["skipped"].as_u64().unwrap(),
        items["total"].as_u64().unwrap(),
        "{decollage}"
    );
    for id in small.iter().chain([&roi]) {
        let done = wait_until(&server, *id, finished);
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "run once: {done}");
    }
    for session in [
        "A_54.0143_-2.7770_04052023_1",
        "B_54.0143_-2.7770_04052023_1",
    ] {
        assert_eq!(runs(&out, session), 1, "{session} ran once");
    }
    let status = common::status_json(&root, &out);
    for session in status.as_array().unwrap() {
        assert_eq!(session["state"], "complete", "{session}");
    }
    let big_vignettes = common::vignette_files(&out.join("Big").join("vignettes")).len();
    assert_eq!(big_vignettes, 12_000);

    // A SIGTERM lets a running order finish its items in flight and puts it back.
    std::fs::remove_dir_all(out.join("Big")).unwrap();
    let again = accepted(
        &server,
        &json!({"task": "FlowCamPipeline", "session": "Big"}),
    );
    wait_until(&server, again, |r| r["state"] == "running");
    assert_eq!(server.terminate(), Some(143));
    let server = serve(&root, &out);
    let done = wait_until(&server, again, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
}

#[test]
fn a_retried_post_with_its_key_returns_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    let server = serve(&root, &out);
    let order = json!({"roi": {"session": FIXTURE, "collage": PAGE, "x": 0, "y": 0, "width": 4, "height": 4}});
    let (status, _, first) = post(&server, &order, Some("retry-42"));
    assert_eq!(status, 202);
    let (status, head, again) = post(&server, &order, Some("retry-42"));
    assert_eq!(status, 200);
    assert!(head.contains("idempotent-replayed: true"), "{head}");
    assert_eq!(again["id"], first["id"]);
    // The same order written otherwise (spacing, key order), with `bearer` in lower case.
    let respaced = format!(
        r#"{{ "roi" : {{"height":4, "width":4, "y":0, "x":0, "collage":"{PAGE}", "session":"{FIXTURE}"}} }}"#
    );
    let lower = format!("bearer {TOKEN}");
    let (status, _, body) = server.request(
        "POST",
        "/api/orders",
        &[("Authorization", &lower), ("Idempotency-Key", "retry-42")],
        respaced.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["id"],
        first["id"]
    );
    let (status, _, answer) = post(
        &server,
        &json!({"roi": {"session": FIXTURE, "collage": PAGE, "x": 1, "y": 0, "width": 4, "height": 4}}),
        Some("retry-42"),
    );
    assert_eq!(status, 422);
    assert!(
        answer["errors"].to_string().contains("different order"),
        "{answer}"
    );
    for key in ["has space", &"k".repeat(300), ""] {
        let (status, _, _) = post(&server, &order, Some(key));
        assert_eq!(status, 400, "{key:?}");
    }
    // Without a key, a second POST is a second order.
    let (_, _, other) = post(&server, &order, None);
    assert_ne!(other["id"], first["id"]);
    wait_until(&server, first["id"].as_u64().unwrap(), finished);
    drop(server);
    // The key outlives the process.
    let server = serve(&root, &out);
    let (status, _, after) = post(&server, &order, Some("retry-42"));
    assert_eq!(status, 200);
    assert_eq!(after["id"], first["id"]);
    assert_eq!(after["state"], "succeeded");
    let (_, body) = get(&server, "/api/orders");
    assert_eq!(
        serde_json::from_slice::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A callback receiver on 127.0.0.1 that answers 500 to its first request and 200 after:
/// its address and the bodies it received.
fn receiver() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (sender, bodies) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let _ = sender.send((head, body));
        }
    });
    (address, bodies)
}

#[test]
fn a_callback_receives_the_result_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    let server = serve(&root, &out);
    let (address, bodies) = receiver();
    let id = accepted(
        &server,
        &json!({
            "roi": {"session": FIXTURE, "collage": PAGE, "x": 5, "y": 5, "width": 10, "height": 10},
            "callback": format!("http://{address}/hook?secret=s3cr3t"),
        }),
    );
    let (first_head, first) = bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    let failed_at = Instant::now();
    assert!(
        first_head.starts_with("POST /hook?secret=s3cr3t "),
        "{first_head}"
    );
    let (head, body) = bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(
        failed_at.elapsed() >= Duration::from_millis(900),
        "retried after its delay, not at once: {:?}",
        failed_at.elapsed()
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-flowcam-order: {id}"))
    );
    let delivered: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(delivered, serde_json::from_slice::<Value>(&first).unwrap());
    assert_eq!(delivered["id"], id);
    assert_eq!(delivered["state"], "succeeded");
    assert!(delivered["result"]["files"][0]["url"].is_string());
    let record = wait_until(&server, id, |r| r["callback"]["delivered"] == true);
    assert_eq!(record["callback"]["attempts"], 2);

    // A receiver that never answers holds up no other order's callback.
    let hanging = TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_address = hanging.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in hanging.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    for _ in 0..3 {
        accepted(
            &server,
            &json!({
                "roi": {"session": FIXTURE, "collage": PAGE, "x": 1, "y": 1, "width": 2, "height": 2},
                "callback": format!("http://{hanging_address}/never"),
            }),
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let quick = accepted(
        &server,
        &json!({
            "roi": {"session": FIXTURE, "collage": PAGE, "x": 5, "y": 5, "width": 10, "height": 10},
            "callback": format!("http://{address}/quick"),
        }),
    );
    let sent = Instant::now();
    let (head, _) = bodies.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(head.starts_with("POST /quick "), "{head}");
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "{:?}",
        sent.elapsed()
    );
    wait_until(&server, quick, |r| r["callback"]["delivered"] == true);

    // An unreachable callback is retried, and its error does not repeat the URL.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let id = accepted(
        &server,
        &json!({
            "roi": {"session": FIXTURE, "collage": PAGE, "x": 5, "y": 5, "width": 10, "height": 10},
            "callback": format!("http://{closed}/hook?secret=s3cr3t"),
        }),
    );
    let record = wait_until(&server, id, |r| {
        r["callback"]["attempts"].as_u64().is_some_and(|n| n >= 2)
    });
    assert_eq!(record["callback"]["delivered"], false);
    let error = record["callback"]["last_error"].as_str().unwrap();
    assert!(error.contains("could not be reached"), "{error}");
    assert!(!error.contains("s3cr3t"));

    // Callbacks hanging in flight do not hold up a stop: they are sent again after.
    let stopping = Instant::now();
    assert_eq!(server.terminate(), Some(143));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    drop(held);
}

#[test]
fn an_order_waits_while_another_run_holds_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root_with_fixture(dir.path());
    copy_fixture(&root, "Other_54.0143_-2.7770_04052023_1");
    let server = serve(&root, &out);
    let lock = flowcam_pipeline::engine::WorkspaceLock::acquire(&out.join(FIXTURE)).unwrap();
    let id = accepted(
        &server,
        &json!({"task": "FlowCamPipeline", "session": FIXTURE}),
    );
    let waiting = wait_until(&server, id, |r| {
        r["state"] == "queued"
            && r["note"]
                .as_str()
                .is_some_and(|n| n.contains("another run"))
    });
    assert_eq!(waiting["state"], "queued");
    // Tried again every 2 s, not in a loop, and an order on another session runs meanwhile.
    let other = accepted(
        &server,
        &json!({"task": "FlowCamPipeline", "session": "Other_54.0143_-2.7770_04052023_1"}),
    );
    assert_eq!(wait_until(&server, other, finished)["state"], "succeeded");
    std::thread::sleep(Duration::from_secs(3));
    let attempts = order(&server, id)["attempts"].as_u64().unwrap();
    assert!(
        (2..=5).contains(&attempts),
        "{attempts} attempts in about 3 s"
    );
    assert!(!out.join(FIXTURE).join("manifest.csv").exists());
    drop(lock);
    let done = wait_until(&server, id, finished);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(out.join(FIXTURE).join("manifest.csv").is_file());
}

#[test]
fn a_name_two_sessions_share_names_neither() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_fixture(&root.join("cruise1"), "Dup");
    copy_fixture(&root.join("cruise2"), "Dup");
    let out = dir.path().join("out");
    let server = Server::start_env(
        &root,
        &out,
        &["--recursive"],
        &[("FLOWCAM_SERVE_TOKEN", TOKEN)],
    );
    let (status, _, answer) = post(
        &server,
        &json!({"task": "FlowCamPipeline", "session": "Dup"}),
        None,
    );
    assert_eq!(status, 422);
    let errors = answer["errors"].to_string();
    assert!(
        errors.contains("2 sessions under the root are named Dup")
            && errors.contains("cruise1/Dup")
            && errors.contains("cruise2/Dup"),
        "{errors}"
    );
    assert!(!errors.contains(dir.path().to_str().unwrap()), "{errors}");
    // Nor does the dashboard show one of them under the name.
    assert_eq!(server.get("/sessions/Dup").0, 404);
    assert_eq!(server.get("/api/sessions/Dup").0, 404);
    assert!(!out.join("Dup").exists());
}

//! `serve`: the dashboard and its JSON API over HTTP on 127.0.0.1, against a root of a
//! processed real session, a failed one and one not started, with the real binary.

mod common;

use common::serve::Server;
use common::{FIXTURE, copy_fixture, run_bin, text};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

/// `dir/root` with the bundled real session and one whose `.lst` is broken, neither run;
/// and `dir/out` for their outputs.
fn unprocessed_root(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("root");
    let out = dir.join("out");
    std::fs::create_dir_all(&root).unwrap();
    copy_fixture(&root, FIXTURE);
    let broken = copy_fixture(&root, "Broken_54.0143_-2.7770_04052023_1");
    std::fs::write(
        broken.join(format!("{FIXTURE}.lst")),
        b"not a particle list\n",
    )
    .unwrap();
    (root, out)
}

/// A root of three sessions: the bundled real one, processed; one whose `.lst` is broken,
/// run and failed; one never run.
fn root(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (root, out) = unprocessed_root(dir);
    copy_fixture(&root, "Later_54.0143_-2.7770_05052023_1");
    for name in [FIXTURE, "Broken_54.0143_-2.7770_04052023_1"] {
        let output = run_bin(&[
            "-d",
            root.join(name).to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--no-upload",
            "-q",
        ]);
        assert_eq!(
            output.status.success(),
            name == FIXTURE,
            "{}",
            text(&output)
        );
    }
    (root, out)
}

#[test]
fn the_dashboard_and_the_api_tell_every_session_and_what_became_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root(dir.path());
    let server = Server::start(&root, &out);

    // The API says what `status --json` says, in the same shapes.
    let api = server.json("/api/sessions");
    let status = common::status_json(&root, &out);
    assert_eq!(api, status);
    let states: Vec<(&str, &str)> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["experiment"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(states.contains(&(FIXTURE, "complete")), "{states:?}");
    assert_eq!(states.len(), 3, "{states:?}");
    let failed = server.json("/api/sessions?state=failed");
    assert_eq!(failed.as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(
        server.json("/api/sessions?state=complete")[0]["experiment"],
        FIXTURE
    );

    // The list page: every session linked, with its state and counts.
    let page = server.page("/");
    for name in [
        FIXTURE,
        "Broken_54.0143_-2.7770_04052023_1",
        "Later_54.0143_-2.7770_05052023_1",
    ] {
        assert!(
            page.contains(&format!("<a href=\"/sessions/{name}\">{name}</a>")),
            "{name}"
        );
    }
    assert!(
        page.contains(
            "<td class=\"state-complete\">complete</td><td>102</td><td>102</td><td>0</td>"
        ),
        "{page}"
    );
    assert!(page.contains("state-failed"));
    let filtered = server.page("/?state=not_started");
    assert!(filtered.contains("Later_54.0143_-2.7770_05052023_1"));
    assert!(!filtered.contains(&format!(">{FIXTURE}<")));

    // A session page: its tasks, three plots drawn, the instrument's record, runs, log.
    let page = server.page(&format!("/sessions/{FIXTURE}"));
    assert_eq!(page.matches("<svg").count(), 3, "{page}");
    assert!(page.matches("<rect").count() > 30);
    assert!(
        page.contains("<dt>software</dt><dd>VisualSpreadsheet</dd>"),
        "{page}"
    );
    assert!(page.contains("<dt>um_per_pixel</dt><dd>9.25</dd>"));
    assert!(page.contains("<td>DecollageImages</td><td class=\"state-complete\">complete</td>"));
    assert!(page.contains("<h2>Log</h2>"));
    let detail = server.json(&format!("/api/sessions/{FIXTURE}"));
    assert_eq!(detail["status"], status[api_index(&api, FIXTURE)]);
    assert_eq!(detail["record"]["instrument"]["software_version"], "4.10.8");
    assert_eq!(detail["runs"][0]["succeeded"], true);
    // Statuses are cached, but a change in a session's outputs is seen at once.
    let vignettes = out.join(FIXTURE).join("vignettes");
    let first = common::vignette_files(&vignettes)[0].clone();
    std::fs::remove_file(&first).unwrap();
    // (The list a request is answered from is at most a second old.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let after = server.json("/api/sessions");
    let fixture = &after[api_index(&after, FIXTURE)];
    assert_eq!(fixture["vignettes"], 101, "{fixture}");
    assert_ne!(fixture["state"], "complete");
    // The failed session says why, on its page and in the API.
    let broken = server.json("/api/sessions/Broken_54.0143_-2.7770_04052023_1");
    assert_eq!(broken["status"]["state"], "failed");
    let page = server.page("/sessions/Broken_54.0143_-2.7770_04052023_1");
    assert!(page.contains("state-failed"));
}

fn api_index(api: &Value, name: &str) -> usize {
    api.as_array()
        .unwrap()
        .iter()
        .position(|s| s["experiment"] == name)
        .unwrap()
}

#[test]
fn names_outside_the_root_bad_filters_and_huge_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root(dir.path());
    // A folder beside the root that a traversal would reach.
    copy_fixture(dir.path(), "Outside_54.0143_-2.7770_04052023_1");
    let server = Server::start(&root, &out);
    for target in [
        "/sessions/..",
        "/sessions/..%2FOutside_54.0143_-2.7770_04052023_1",
        "/sessions/%2Fetc%2Fpasswd",
        "/api/sessions/..%2F..%2Fetc",
        "/api/sessions/Outside_54.0143_-2.7770_04052023_1",
        "/sessions/root",
        "/sessions/",
        "/nothing-here",
    ] {
        let (status, _, body) = server.get(target);
        assert_eq!(status, 404, "{target}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = server.get("/api/sessions?state=everything");
    assert_eq!(status, 400);
    let (status, _, _) = server.get("/api/sessions?colour=red");
    assert_eq!(status, 400);
    // A page of another site whose name was rebound to 127.0.0.1 is not answered.
    let mut stream = TcpStream::connect(&server.address).unwrap();
    write!(
        stream,
        "GET /api/sessions HTTP/1.1\r\nHost: attacker.example:80\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 421"), "{response}");
    let (status, _, _) = server.get(&format!("/?state={}", "x".repeat(5000)));
    assert_eq!(status, 414);
    // Markup in a name is shown as text.
    // (No slash: a folder name cannot hold one.)
    let evil = root.join("x<script>alert(1)<script>\"'&_54.0143_-2.7770_04052023_1");
    std::fs::create_dir_all(&evil).unwrap();
    for entry in std::fs::read_dir(common::fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), evil.join(entry.file_name())).unwrap();
    }
    // (A new session shows within a second.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let page = server.page("/");
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("x&lt;script&gt;alert(1)&lt;script&gt;&quot;&#39;&amp;_54"),
        "{page}"
    );
    // ...and its link is one escaped path segment that leads to its page.
    let link =
        "/sessions/x%3Cscript%3Ealert%281%29%3Cscript%3E%22%27%26_54.0143_-2.7770_04052023_1";
    assert!(page.contains(&format!("href=\"{link}\"")), "{page}");
    assert!(server.page(link).contains("x&lt;script&gt;"));
}

#[test]
fn the_gallery_pages_sorts_filters_and_serves_cached_thumbnails_of_the_vignettes() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = root(dir.path());
    let server = Server::start(&root, &out);
    let base = format!("/sessions/{FIXTURE}");

    // 102 particles: 100 on the first page, 2 on the second.
    let page = server.page(&format!("{base}/gallery"));
    assert_eq!(page.matches("<img src=").count(), 100, "{page}");
    assert!(page.contains("rel=\"next\""));
    let second = server.page(&format!("{base}/gallery?page=2"));
    assert_eq!(second.matches("<img src=").count(), 2);
    assert!(!second.contains("rel=\"next\""));

    // The JSON page: sorted by size, filtered by size.
    let all = server.json(&format!(
        "/api/sessions/{FIXTURE}/particles?sort=size&per_page=500"
    ));
    assert_eq!(all["matching"], 102);
    let sizes: Vec<f64> = all["particles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["esd_um"].as_f64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 102);
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    let median = sizes[51];
    let big = server.json(&format!(
        "/api/sessions/{FIXTURE}/particles?min_um={median}"
    ));
    let n = big["matching"].as_u64().unwrap() as usize;
    assert_eq!(n, sizes.iter().filter(|s| **s >= median).count());
    let blank = server.json(&format!("/api/sessions/{FIXTURE}/particles?blank=true"));
    assert_eq!(blank["matching"], 0);
    // The gallery's own form, as a browser submits it with every field left at "any".
    let any = server.page(&format!(
        "{base}/gallery?class=&blank=&min_um=&max_um=&sort=manifest"
    ));
    assert_eq!(any.matches("<img src=").count(), 100);
    let none = server.json(&format!(
        "/api/sessions/{FIXTURE}/particles?class=%28none%29&per_page=500"
    ));
    assert_eq!(
        none["matching"], 102,
        "no particle of the bundled page has a class"
    );
    for bad in [
        "?per_page=x",
        "?colour=red",
        "?sort=sideways",
        "?min_um=abc",
    ] {
        let (status, _, _) = server.get(&format!("{base}/gallery{bad}"));
        assert_eq!(status, 400, "{bad}");
    }

    // The largest vignette's thumbnail is scaled to 128 pixels, keeping its aspect.
    let largest = all["particles"][0]["file"].as_str().unwrap();
    let (status, _, png) = server.get(&format!("{base}/thumbnails/{largest}"));
    assert_eq!(status, 200);
    let info = png::Decoder::new(std::io::Cursor::new(&png))
        .read_info()
        .unwrap();
    let (tw, th) = (info.info().width, info.info().height);
    let (w, h, _, _) = common::decode(&common::vignette(
        &out.join(FIXTURE).join("vignettes"),
        largest,
    ));
    assert_eq!(tw.max(th), 128, "{w}x{h} -> {tw}x{th}");
    assert!(((tw as f64 / th as f64) - (w as f64 / h as f64)).abs() < 0.02);

    // A small vignette's thumbnail holds its very pixels, as a PNG, cached.
    let first = &all["particles"][101];
    let file = first["file"].as_str().unwrap();
    let (status, head, png) = server.get(&format!("{base}/thumbnails/{file}"));
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let (pw, ph, _, pixels) = common::decode_png_bytes(&png);
    let (w, h, _, tiff) = common::decode(&common::vignette(
        &out.join(FIXTURE).join("vignettes"),
        file,
    ));
    assert_eq!((pw, ph), (w, h));
    assert_eq!(pixels, tiff);
    // The browser's copy is current: 304 and no body.
    let mut stream = TcpStream::connect(&server.address).unwrap();
    write!(
        stream,
        "GET {base}/thumbnails/{file} HTTP/1.1\r\nHost: {}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n",
        server.address
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 304"), "{response}");

    // Only the manifest's vignettes are served.
    for target in [
        format!("{base}/thumbnails/..%2Fmanifest.csv"),
        format!("{base}/thumbnails/manifest.csv"),
        format!("{base}/images/%2Fetc%2Fpasswd"),
        format!("{base}/images/{FIXTURE}_999999.tif"),
        format!("{base}/particles/999999"),
    ] {
        let (status, _, _) = server.get(&target);
        assert_eq!(status, 404, "{target}");
    }

    // A listed vignette replaced by a file claiming 3,000 x 3,000 pixels is not decoded,
    // and the answer names no path of the server.
    let victim = all["particles"][50]["file"].as_str().unwrap();
    let path = common::vignette(&out.join(FIXTURE).join("vignettes"), victim);
    let mut huge = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    tiff::encoder::TiffEncoder::new(&mut huge)
        .unwrap()
        .write_image::<tiff::encoder::colortype::Gray8>(3000, 3000, &vec![0u8; 9_000_000])
        .unwrap();
    drop(huge);
    let (status, _, body) = server.get(&format!("{base}/images/{victim}"));
    assert_eq!(status, 404);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("cannot be read"), "{body}");
    assert!(!body.contains(out.to_str().unwrap()), "{body}");

    // The particle page: the vignette at full size, a scale bar from the pixel size, its
    // measurements and its tags.
    let id = first["particle_id"].as_str().unwrap();
    let page = server.page(&format!("{base}/particles/{id}"));
    assert!(
        page.contains(&format!("src=\"{base}/images/{file}\"")),
        "{page}"
    );
    assert!(page.contains("id=\"scale-bar\""), "{page}");
    assert!(page.contains("<th>esd_diameter</th>"));
    assert!(page.contains("<dt>Make</dt><dd>Fluid Imaging Technologies</dd>"));
    assert!(
        page.contains("<dt>pixel size</dt><dd>9.2500 µm</dd>"),
        "{page}"
    );
    let (status, head, _) = server.get(&format!("{base}/images/{file}"));
    assert_eq!(status, 200);
    assert!(head.contains("image/png"));
}

#[test]
fn with_watch_the_service_runs_the_pass_itself_and_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = unprocessed_root(dir.path());
    let server = Server::start_with(&root, &out, &["--watch", "1", "--no-upload"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let watch = server.json("/api/watch");
        if watch["last"]["sessions"] == 2 {
            assert_eq!(watch["period_s"], 1);
            assert_eq!(watch["last"]["failed"], 1, "{watch}");
            assert!(watch["next_at"].is_string());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pass in time: {watch}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The pass made the vignettes, as cron's would.
    let sessions = server.json("/api/sessions?state=complete");
    assert_eq!(sessions[0]["experiment"], FIXTURE, "{sessions}");
    assert_eq!(sessions[0]["vignettes"], 102);
    assert_eq!(
        common::vignette_files(&out.join(FIXTURE).join("vignettes")).len(),
        102
    );
    let page = server.page("/");
    assert!(
        page.contains("<p id=\"watch\">Watching every 1 s: "),
        "{page}"
    );
    // Without --watch there is no watcher to ask about.
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let (root2, out2) = self::root(&plain_dir);
    let plain = Server::start(&root2, &out2);
    let (status, _, _) = plain.get("/api/watch");
    assert_eq!(status, 404);
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (root, out) = unprocessed_root(dir.path());
    let server = Server::start(&root, &out);
    // Half a request, then nothing: the server must not keep the connection for ever.
    let mut slow = TcpStream::connect(&server.address).unwrap();
    write!(
        slow,
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        server.address
    )
    .unwrap();
    slow.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let started = std::time::Instant::now();
    // Meanwhile others are answered.
    assert_eq!(server.get("/api/sessions").0, 200);
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(
        read.is_ok(),
        "closed by the server, not timed out here: {read:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

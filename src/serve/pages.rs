//! The dashboard's HTML, rendered on the server: pages that work without JavaScript (a
//! `<meta refresh>` keeps the list current). Every value from a file is escaped.

use super::catalog::{
    NO_CLASS, Particle, ParticleData, ParticlePage, ParticleQuery, SessionDetail, Sort,
};
use super::plots;
use crate::status::{SessionState, SessionStatus};
use serde_json::Value;
use std::fmt::Write;

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as one URL path segment.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:top}.state-failed{color:#b00020;font-weight:bold}\
.state-complete{color:#1b5e20}.state-waiting,.state-stale,.state-interrupted{color:#8a6d00}\
nav a{margin-right:.8em}pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}\
.plots{display:flex;flex-wrap:wrap;gap:1em}";

fn page(title: &str, refresh: Option<u32>, body: &str) -> String {
    let refresh = refresh
        .map(|s| format!(r#"<meta http-equiv="refresh" content="{s}">"#))
        .unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <title>{} - flowcam-pipeline</title><style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">sessions</a><a href=\"/api/sessions\">JSON</a></nav>{body}</body></html>",
        escape(title)
    )
}

fn count(n: Option<u64>) -> String {
    n.map_or("-".to_string(), |n| n.to_string())
}

const STATES: [SessionState; 9] = [
    SessionState::Complete,
    SessionState::Stale,
    SessionState::Waiting,
    SessionState::Failed,
    SessionState::Interrupted,
    SessionState::NotStarted,
    SessionState::Invalid,
    SessionState::Queued,
    SessionState::Running,
];

/// `/`: every session with its state and counts, filterable by state.
pub fn dashboard(
    sessions: &[SessionStatus],
    filter: Option<SessionState>,
    watching: Option<&Value>,
) -> String {
    let mut body = String::from("<h1>Sessions</h1>");
    if let Some(w) = watching {
        let last = &w["last"];
        let line = if w["running"] == true {
            "a pass is running now".to_string()
        } else if last.is_null() {
            "the first pass is starting".to_string()
        } else {
            format!(
                "last pass {} to {}: {} sessions, {} ran, {} complete, {} failed, {} waiting, {} busy{}; next pass at {}",
                last["started_at"].as_str().unwrap_or(""),
                last["finished_at"].as_str().unwrap_or(""),
                last["sessions"],
                last["ran"],
                last["complete"],
                last["failed"],
                last["waiting"],
                last["busy"],
                last["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                w["next_at"].as_str().unwrap_or("-"),
            )
        };
        let _ = write!(
            body,
            "<p id=\"watch\">Watching every {} s: {}</p>",
            w["period_s"],
            escape(&line)
        );
    }
    body.push_str("<p>State: <a href=\"/\">all</a>");
    for state in STATES {
        let _ = write!(body, " <a href=\"/?state={state}\">{state}</a>");
    }
    body.push_str("</p>");
    if let Some(state) = filter {
        let _ = write!(body, "<p>Showing the {state} sessions.</p>");
    }
    body.push_str(
        "<table id=\"sessions\"><thead><tr><th>session</th><th>state</th><th>particles</th>\
         <th>vignettes</th><th>blanks</th><th>uploaded</th><th>last run</th><th>last error</th>\
         </tr></thead><tbody>",
    );
    for s in sessions {
        let name = s
            .folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let error = s
            .last_failure
            .as_ref()
            .map(|f| format!("{}: {}", f.at, f.error))
            .or_else(|| s.reason.clone())
            .unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/sessions/{}\">{}</a></td><td class=\"state-{}\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            segment(&name),
            escape(&name),
            s.state,
            s.state,
            count(s.particles),
            count(s.vignettes),
            count(s.blanks),
            count(s.uploaded),
            escape(s.last_run.as_deref().unwrap_or("-")),
            escape(&error),
        );
    }
    body.push_str("</tbody></table>");
    if sessions.is_empty() {
        body.push_str("<p>No sessions.</p>");
    }
    page("Sessions", Some(30), &body)
}

/// The facts of one `session.json` section as a definition list (nested values as JSON).
fn facts(title: &str, section: &Value) -> String {
    let Some(object) = section.as_object() else {
        return String::new();
    };
    let mut out = format!("<h3>{}</h3><dl>", escape(title));
    for (key, value) in object {
        let shown = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(key), escape(&shown));
    }
    out.push_str("</dl>");
    out
}

/// `/sessions/NAME`.
pub fn session(name: &str, detail: &SessionDetail, particles: &ParticleData) -> String {
    let s = &detail.status;
    let mut body = format!(
        "<h1>{}</h1><p>State: <span class=\"state-{}\">{}</span>{}</p>\
         <p>{} particles, {} vignettes, {} blanks, {} uploaded</p>",
        escape(name),
        s.state,
        s.state,
        s.reason
            .as_ref()
            .map(|r| format!(": {}", escape(r)))
            .unwrap_or_default(),
        count(s.particles),
        count(s.vignettes),
        count(s.blanks),
        count(s.uploaded),
    );
    let _ = write!(
        body,
        "<p><a id=\"gallery-link\" href=\"/sessions/{}/gallery\">particles</a></p>",
        segment(name)
    );
    body.push_str(
        "<h2>Tasks</h2><table id=\"tasks\"><tr><th>task</th><th>state</th><th>why</th></tr>",
    );
    for t in &s.tasks {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"state-{}\">{}</td><td>{}</td></tr>",
            escape(&t.task),
            t.state,
            t.state,
            escape(t.reason.as_deref().unwrap_or(""))
        );
    }
    body.push_str("</table>");

    body.push_str("<h2>Plots</h2><div class=\"plots\">");
    body.push_str(&plots::histogram(
        "Size distribution",
        "equivalent spherical diameter (µm)",
        &particles.esd_um,
        30,
    ));
    let classes: Vec<(String, usize)> = particles
        .per_class
        .iter()
        .map(|(class, n)| {
            let label = if class.is_empty() { "(none)" } else { class };
            (label.to_string(), *n)
        })
        .collect();
    body.push_str(&plots::bars("Particles per class", "class", &classes));
    body.push_str(&plots::histogram(
        "Particles over the run",
        "seconds since the run started",
        &particles.elapsed_s,
        30,
    ));
    body.push_str("</div>");

    if let Some(record) = &detail.record {
        body.push_str("<h2>The instrument's record</h2>");
        for (title, key) in [
            ("Instrument", "instrument"),
            ("Calibration", "calibration"),
            ("Run", "run"),
            ("Sample", "sample"),
            ("Blanks", "blanks"),
        ] {
            let mut section = record[key].clone();
            if let Some(object) = section.as_object_mut() {
                object.remove("ids");
            }
            body.push_str(&facts(title, &section));
        }
        if let Some(notes) = record["notes"].as_str() {
            let _ = write!(body, "<h3>Notes</h3><pre>{}</pre>", escape(notes));
        }
    }

    body.push_str("<h2>Runs</h2><table id=\"runs\"><tr><th>started</th><th>seconds</th><th>outcome</th><th>tasks</th></tr>");
    for run in &detail.runs {
        let outcome = if run.succeeded {
            "succeeded"
        } else if run.interrupted {
            "interrupted"
        } else {
            "failed"
        };
        let tasks: Vec<String> = run
            .tasks
            .iter()
            .map(|(task, state, error)| {
                let error = error
                    .as_ref()
                    .map(|e| format!(": {}", escape(e)))
                    .unwrap_or_default();
                format!("{} {}{error}", escape(task), escape(state))
            })
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{:.1}</td><td>{outcome}</td><td>{}</td></tr>",
            escape(&run.started_at),
            run.duration_ms as f64 / 1000.0,
            tasks.join("<br>")
        );
    }
    body.push_str("</table>");
    if let Some(log) = &detail.log {
        let _ = write!(body, "<h2>Log</h2><pre>{}</pre>", escape(log));
    }
    page(name, None, &body)
}

/// A page for an error (404 and the like).
pub fn error(status: u16, message: &str) -> String {
    page(
        &status.to_string(),
        None,
        &format!("<h1>{status}</h1><p>{}</p>", escape(message)),
    )
}

/// A query string of `pairs` (values escaped for a URL).
fn query_string(pairs: &[(&str, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", segment(v)))
        .collect();
    parts.join("&amp;")
}

/// `/sessions/NAME/gallery`: a page of thumbnails, with the filters that made it.
pub fn gallery(
    name: &str,
    page: &ParticlePage,
    query: &ParticleQuery,
    classes: &[String],
) -> String {
    let base = format!("/sessions/{}", segment(name));
    let mut body = format!(
        "<h1><a href=\"{base}\">{}</a>: particles</h1><form method=\"get\">\
         <label>class <select name=\"class\"><option value=\"\">any</option>",
        escape(name)
    );
    if classes.iter().any(String::is_empty) {
        let selected = if query.class.as_deref() == Some(NO_CLASS) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{NO_CLASS}\"{selected}>without a class</option>"
        );
    }
    for class in classes.iter().filter(|c| !c.is_empty()) {
        let selected = if query.class.as_deref() == Some(class) {
            " selected"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<option value=\"{}\"{selected}>{}</option>",
            escape(class),
            escape(class)
        );
    }
    let blank = |v: Option<bool>| if query.blank == v { " selected" } else { "" };
    let _ = write!(
        body,
        "</select></label> <label>blank <select name=\"blank\"><option value=\"\"{}>any</option>\
         <option value=\"true\"{}>blank</option><option value=\"false\"{}>not blank</option>\
         </select></label> <label>ESD from <input name=\"min_um\" size=\"5\" value=\"{}\"></label>\
         <label> to <input name=\"max_um\" size=\"5\" value=\"{}\"> µm</label> <label>sort \
         <select name=\"sort\"><option value=\"manifest\">as cut</option><option value=\"size\"{}>\
         largest first</option><option value=\"size_ascending\"{}>smallest first</option>\
         <option value=\"class\"{}>class</option></select></label> <button>show</button></form>",
        blank(None),
        blank(Some(true)),
        blank(Some(false)),
        query.min_um.map(|v| v.to_string()).unwrap_or_default(),
        query.max_um.map(|v| v.to_string()).unwrap_or_default(),
        if query.sort == Sort::Size {
            " selected"
        } else {
            ""
        },
        if query.sort == Sort::SizeAscending {
            " selected"
        } else {
            ""
        },
        if query.sort == Sort::Class {
            " selected"
        } else {
            ""
        },
    );
    let pages = page.matching.div_ceil(page.per_page).max(1);
    let _ = write!(
        body,
        "<p>{} particles; page {} of {pages}.</p><div id=\"gallery\" class=\"gallery\">",
        page.matching, page.page
    );
    for p in &page.particles {
        let id = &p.row.particle_id;
        let link = format!("{base}/particles/{}", segment(id));
        let title = format!(
            "{id}{}{}{}",
            if p.row.class.is_empty() {
                String::new()
            } else {
                format!(" {}", p.row.class)
            },
            p.esd_um.map(|v| format!(" {v:.0} µm")).unwrap_or_default(),
            if p.row.blank { " blank" } else { "" }
        );
        if p.row.has_vignette() {
            let _ = write!(
                body,
                "<a href=\"{link}\" title=\"{}\"><img src=\"{base}/thumbnails/{}\" alt=\"particle {}\" loading=\"lazy\"></a>",
                escape(&title),
                segment(&p.row.file),
                escape(id)
            );
        } else {
            let _ = write!(
                body,
                "<a href=\"{link}\" class=\"skipped\" title=\"{}\">{} (not written)</a>",
                escape(&title),
                escape(id)
            );
        }
    }
    body.push_str("</div><p>");
    let here = |n: usize| {
        query_string(&[
            ("page", n.to_string()),
            ("class", query.class.clone().unwrap_or_default()),
            (
                "blank",
                query.blank.map(|b| b.to_string()).unwrap_or_default(),
            ),
            (
                "min_um",
                query.min_um.map(|v| v.to_string()).unwrap_or_default(),
            ),
            (
                "max_um",
                query.max_um.map(|v| v.to_string()).unwrap_or_default(),
            ),
            (
                "sort",
                match query.sort {
                    Sort::Manifest => String::new(),
                    Sort::Size => "size".into(),
                    Sort::SizeAscending => "size_ascending".into(),
                    Sort::Class => "class".into(),
                },
            ),
        ])
    };
    if page.page > 1 {
        let _ = write!(body, "<a href=\"?{}\">previous</a> ", here(page.page - 1));
    }
    if page.page < pages {
        let _ = write!(
            body,
            "<a href=\"?{}\" rel=\"next\">next</a>",
            here(page.page + 1)
        );
    }
    body.push_str("</p>");
    page_with_style(name, &body, GALLERY_STYLE)
}

const GALLERY_STYLE: &str = ".gallery{display:flex;flex-wrap:wrap;gap:4px}.gallery img{\
background:#eee;image-rendering:pixelated}.skipped{font-size:.8em;color:#777}";

fn page_with_style(title: &str, body: &str, style: &str) -> String {
    page(title, None, &format!("<style>{style}</style>{body}"))
}

/// The longest scale bar that fits `width` pixels: 1, 2 or 5 times a power of ten µm.
pub fn scale_bar_um(um_per_pixel: f64, width: u32) -> Option<f64> {
    if !(um_per_pixel.is_finite() && um_per_pixel > 0.0) || width == 0 {
        return None;
    }
    let span = um_per_pixel * width as f64 * 0.8;
    let power = 10f64.powf(span.log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&length| length <= span)
}

/// `/sessions/NAME/particles/ID`: the vignette at full size with a scale bar, its
/// measurements and its tags.
pub fn particle(
    name: &str,
    particle: &Particle,
    measurements: &[(String, String)],
    tags: &[(String, String)],
    um_per_pixel: Option<f64>,
) -> String {
    let base = format!("/sessions/{}", segment(name));
    let row = &particle.row;
    let mut body = format!(
        "<h1><a href=\"{base}\">{}</a>: particle {}</h1><p>page {}{}{}</p>",
        escape(name),
        escape(&row.particle_id),
        escape(&row.collage),
        if row.class.is_empty() {
            String::new()
        } else {
            format!(", class {}", escape(&row.class))
        },
        if row.blank { ", blank" } else { "" },
    );
    // Shown at three times its size: vignettes are tens of pixels across.
    let zoom = 3;
    if row.has_vignette() {
        let _ = write!(
            body,
            "<figure><img id=\"vignette\" src=\"{base}/images/{}\" width=\"{}\" height=\"{}\" \
             alt=\"particle {}\" style=\"image-rendering:pixelated\">",
            segment(&row.file),
            row.width.saturating_mul(zoom),
            row.height.saturating_mul(zoom),
            escape(&row.particle_id)
        );
        if let Some(um) = um_per_pixel
            && let Some(length) = scale_bar_um(um, row.width)
        {
            let px = length / um * zoom as f64;
            let _ = write!(
                body,
                "<svg id=\"scale-bar\" width=\"{w}\" height=\"24\" role=\"img\"><title>{length} µm</title>\
                 <rect x=\"0\" y=\"2\" width=\"{px:.1}\" height=\"6\" fill=\"#000\"/>\
                 <text x=\"0\" y=\"22\" font-size=\"12\">{length} µm</text></svg>",
                w = row.width.saturating_mul(zoom).max(80)
            );
        }
        body.push_str("</figure>");
    } else {
        body.push_str("<p>No vignette was written (a blank left out with --blanks skip).</p>");
    }
    body.push_str("<h2>Tags</h2><dl>");
    for (k, v) in tags {
        let _ = write!(body, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
    }
    body.push_str("</dl><h2>Measurements</h2><table id=\"measurements\">");
    for (k, v) in measurements {
        let _ = write!(
            body,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    body.push_str("</table>");
    page(&format!("{name} {}", row.particle_id), None, &body)
}

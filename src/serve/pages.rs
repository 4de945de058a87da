//! The dashboard's HTML, rendered on the server: pages that work without JavaScript (a
//! `<meta refresh>` keeps the list current). Every value from a file is escaped.

use super::catalog::{ParticleData, SessionDetail};
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

const STATES: [SessionState; 7] = [
    SessionState::Complete,
    SessionState::Stale,
    SessionState::Waiting,
    SessionState::Failed,
    SessionState::Interrupted,
    SessionState::NotStarted,
    SessionState::Invalid,
];

/// `/`: every session with its state and counts, filterable by state.
pub fn dashboard(sessions: &[SessionStatus], filter: Option<SessionState>) -> String {
    let mut body = String::from("<h1>Sessions</h1><p>State: <a href=\"/\">all</a>");
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

//! Writes synthetic FlowCam sessions for tests and scale benchmarks.
//!
//! ```text
//! make_session --out DIR --particles N --pages P
//!              [--lat X --lon Y --date DDMMYYYY [--depth D]]
//!              [--prefix NAME] [--seed S] [--extra-fields K] [--page-width W] [--count C]
//! ```
//!
//! With `--count C`, writes C sessions with prefixes `NAME_001`, `NAME_002`, … and seeds
//! `S`, `S+1`, … Prints the path of every session written, one per line.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use flowcam_pipeline::synthetic::SyntheticSession;

const USAGE: &str = "usage: make_session --out DIR --particles N --pages P \
[--lat X --lon Y --date DDMMYYYY [--depth D]] [--prefix NAME] [--seed S] \
[--extra-fields K] [--page-width W] [--count C]";

fn parse<T: FromStr>(flag: &str, value: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("invalid {flag} {value:?}"))
}

fn main() -> Result<()> {
    let mut session = SyntheticSession::default();
    let (mut out, mut count) = (None, None::<usize>);
    let (mut lat, mut lon, mut date, mut depth) = (None, None, None, None);

    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value)),
            "--particles" => session.particles = parse(&flag, &value)?,
            "--pages" => session.pages = parse(&flag, &value)?,
            "--lat" => lat = Some(parse::<f64>(&flag, &value)?),
            "--lon" => lon = Some(parse::<f64>(&flag, &value)?),
            "--date" => {
                let d = NaiveDate::parse_from_str(&value, "%d%m%Y");
                date = Some(d.with_context(|| format!("invalid --date {value:?}, want DDMMYYYY"))?);
            }
            "--depth" => depth = Some(parse::<f64>(&flag, &value)?),
            "--prefix" => session.prefix = value,
            "--seed" => session.seed = parse(&flag, &value)?,
            "--extra-fields" => session.extra_fields = parse(&flag, &value)?,
            "--page-width" => session.page_width = parse(&flag, &value)?,
            "--count" => count = Some(parse(&flag, &value)?),
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    let out = out.with_context(|| format!("--out is required\n{USAGE}"))?;
    session.position = match (lat, lon, date) {
        (Some(lat), Some(lon), Some(date)) => Some((lat, lon, date, depth)),
        (None, None, None) if depth.is_none() => None,
        _ => bail!("--lat, --lon and --date go together (and --depth needs them)\n{USAGE}"),
    };

    let Some(count) = count else {
        println!("{}", session.write(&out)?.display());
        return Ok(());
    };
    let (prefix, seed) = (session.prefix.clone(), session.seed);
    for i in 1..=count {
        session.prefix = format!("{prefix}_{i:03}");
        session.seed = seed.wrapping_add(i as u64 - 1);
        println!("{}", session.write(&out)?.display());
    }
    Ok(())
}

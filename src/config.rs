//! The configuration file: `flowcam-pipeline.toml` in the working folder, or the file given
//! with `--config PATH`.
//!
//! It holds defaults for the options a lab sets once and then forgets (where outputs go,
//! the bucket, the endpoint, how many workers...), so that a day's command lines shrink to
//! `flowcam-pipeline --directory SESSION`. Precedence, highest first:
//!
//! 1. the command line,
//! 2. the environment,
//! 3. this file,
//! 4. the built-in defaults.
//!
//! This module only reads and checks the file; merging it with the other sources is the
//! command line's job. Every key is named exactly like the long command-line flag it
//! stands for (`s3-bucket` for `--s3-bucket`), so there is one set of names to learn; the
//! flags that switch something off become booleans (`upload = false` for `--no-upload`,
//! `embed-measurements = false` for `--no-embed-measurements`). Options that belong to one
//! run (`--directory`, `--experiment-name`, `--force`, `--verify-remote`) have no key.
//!
//! The file is checked as strictly as the command line: an unknown key, a value of the wrong
//! type, a number out of range or a value outside a fixed set is an error whose message names
//! the file, the line and the key. A misspelt key silently ignored would be a setting the user
//! believes in and the pipeline does not follow. Secrets (S3 keys) do not belong here: they
//! go in `.env` (see `.env.example`).
//!
//! `flowcam-pipeline.toml.example` at the repository root documents every key; a test checks
//! that it does.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file looked for in the working folder when `--config` is not given.
pub const FILE_NAME: &str = "flowcam-pipeline.toml";

/// Every key the file may hold, in the order of the example file.
pub const KEYS: &[&str] = &[
    "output-directory",
    "workers",
    "memory-limit",
    "sessions",
    "recursive",
    "settle-seconds",
    "embed-measurements",
    "grey-vignettes",
    "blanks",
    "sample-sheet",
    "depth-from-name",
    "ecotaxa",
    "s3-bucket",
    "s3-endpoint",
    "s3-prefix",
    "api-url",
    "api-batch-size",
    "upload-concurrency",
    "create-bucket",
    "upload",
    "upload-ecotaxa",
    "local-vignettes",
    "progress",
    "log-format",
    "log-level",
    "on-failure",
];

/// The values `progress` accepts.
pub const PROGRESS_VALUES: &[&str] = &["auto", "bars", "plain", "off"];

/// The values `blanks` accepts.
pub const BLANKS_VALUES: &[&str] = &crate::tasks::BlankPolicy::NAMES;

/// The values `log-format` accepts.
pub const LOG_FORMAT_VALUES: &[&str] = &["text", "json"];

/// The largest `upload-concurrency` (as on the command line).
pub const MAX_UPLOAD_CONCURRENCY: usize = 1024;

/// The contents of a configuration file. `None` means "not set here": the built-in default
/// (or the environment) applies.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `--output-directory`. A relative path is relative to the configuration file's folder
    /// (resolved by [`Config::parse`]), so the file means the same from any working folder.
    pub output_directory: Option<PathBuf>,
    /// `--workers`: 0 = one per core, at most [`crate::cli::MAX_WORKERS`].
    pub workers: Option<usize>,
    /// `--memory-limit`: MiB for decoded pages, shared by all workers.
    pub memory_limit: Option<usize>,
    /// `--sessions`: sessions processed at the same time, at least 1.
    pub sessions: Option<usize>,
    /// `--recursive`.
    pub recursive: Option<bool>,
    /// `--settle-seconds`.
    pub settle_seconds: Option<u64>,
    /// `false` = `--no-embed-measurements`.
    pub embed_measurements: Option<bool>,
    /// `--grey-vignettes`.
    pub grey_vignettes: Option<bool>,
    /// `--blanks`: one of [`BLANKS_VALUES`].
    pub blanks: Option<String>,
    /// `--sample-sheet`.
    pub sample_sheet: Option<PathBuf>,
    /// `false` = `--no-depth-from-name`.
    pub depth_from_name: Option<bool>,
    /// `--ecotaxa`.
    pub ecotaxa: Option<bool>,
    /// `--s3-bucket`.
    pub s3_bucket: Option<String>,
    /// `--s3-endpoint`.
    pub s3_endpoint: Option<String>,
    /// `--s3-prefix`.
    pub s3_prefix: Option<String>,
    /// `--api-url`.
    pub api_url: Option<String>,
    /// `--api-batch-size`: 1 to [`crate::upload::api::MAX_BATCH`].
    pub api_batch_size: Option<usize>,
    /// `--upload-concurrency`: 1 to [`MAX_UPLOAD_CONCURRENCY`].
    pub upload_concurrency: Option<usize>,
    /// `--create-bucket`.
    pub create_bucket: Option<bool>,
    /// `false` = `--no-upload`.
    pub upload: Option<bool>,
    /// `--upload-ecotaxa`.
    pub upload_ecotaxa: Option<bool>,
    /// `false` = `--no-local-vignettes`.
    pub local_vignettes: Option<bool>,
    /// `--progress`: one of [`PROGRESS_VALUES`].
    pub progress: Option<String>,
    /// `--log-format`: one of [`LOG_FORMAT_VALUES`].
    pub log_format: Option<String>,
    /// `--log-level`: a tracing filter (`info`, `debug`, `flowcam_pipeline=debug`...).
    pub log_level: Option<String>,
    /// `--on-failure`: a shell command run when a run fails.
    pub on_failure: Option<String>,
}

/// Why a configuration file cannot be used. Every message names the file; those about its
/// contents also name the line (when known) and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist (only an error when it was asked for with `--config`).
    #[error("{}: no such configuration file", path.display())]
    NotFound { path: PathBuf },
    /// The file exists but cannot be read.
    #[error("{}: cannot read the configuration file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: {}not valid TOML: {message}", path.display(), at(*line, *column))]
    Syntax {
        path: PathBuf,
        /// 1-based; `None` when the parser gave no position.
        line: Option<usize>,
        /// 1-based, in characters.
        column: Option<usize>,
        message: String,
    },
    /// A key this program does not know (a typo, or an option that has no key).
    #[error(
        "{}: {}unknown key `{key}`{} (known keys: {})",
        path.display(),
        at(*line, None),
        hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default(),
        KEYS.join(", ")
    )]
    UnknownKey {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        /// "did you mean ...", or where the option goes instead.
        hint: Option<String>,
    },
    /// A known key with a value of the wrong type, out of range or outside its fixed set.
    #[error("{}: {}key `{key}`: {message}", path.display(), at(*line, None))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// `"line 3, column 7: "`, `"line 3: "` or nothing.
fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

impl Config {
    /// Parses and checks the text of the configuration file at `path` (`path` names the file
    /// in messages, and a relative `output-directory` is resolved against its folder).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let table = toml::de::DeTable::parse(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                column,
                message: one_line(e.message()),
            }
        })?;

        // The line of each top-level key, for messages; unknown keys are reported here, with
        // their line, before serde would report the first of them without one.
        let mut lines: Vec<(String, usize)> = Vec::new();
        for key in table.get_ref().keys() {
            let name: &str = key.get_ref();
            let line = line_column(text, key.span().start).0;
            if !KEYS.contains(&name) {
                let hint = match table.get_ref()[key].get_ref() {
                    toml::de::DeValue::Table(inner) => Some(table_hint(name, inner)),
                    _ => hint(name),
                };
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    line: Some(line),
                    key: name.to_string(),
                    hint,
                });
            }
            lines.push((name.to_string(), line));
        }
        let line_of = |key: &str| lines.iter().find(|(k, _)| k == key).map(|(_, l)| *l);

        let deserializer = toml::de::Deserializer::from(table);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
                _ => e.path().to_string(),
            };
            let line = line_of(&key)
                .or_else(|| e.inner().span().map(|span| line_column(text, span.start).0));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                key,
                message: one_line(e.inner().message()),
            }
        })?;

        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(key),
                key: key.to_string(),
                message,
            })?;

        if let (Some(dir), Some(folder)) = (&config.output_directory, path.parent())
            && dir.is_relative()
        {
            config.output_directory = Some(folder.join(dir));
        }
        if let (Some(sheet), Some(folder)) = (&config.sample_sheet, path.parent())
            && sheet.is_relative()
        {
            config.sample_sheet = Some(folder.join(sheet));
        }
        Ok(config)
    }

    /// Reads and parses the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Config::parse(path, &text)
    }

    /// Finds the configuration file to use: `explicit` (from `--config`; relative to
    /// `working_dir`), which must exist, or else [`FILE_NAME`] in `working_dir` if there is
    /// one. `Ok(None)`: no file, the built-in defaults apply.
    pub fn discover(
        explicit: Option<&Path>,
        working_dir: &Path,
    ) -> Result<Option<(PathBuf, Config)>, ConfigError> {
        match explicit {
            Some(path) => {
                let path = working_dir.join(path);
                let config = Config::load(&path)?;
                Ok(Some((path, config)))
            }
            None => {
                let path = working_dir.join(FILE_NAME);
                match Config::load(&path) {
                    Ok(config) => Ok(Some((path, config))),
                    Err(ConfigError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Checks what the types alone do not: ranges, fixed sets, empty values. The error is
    /// the key and what is wrong.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        fn range(
            key: &'static str,
            value: Option<usize>,
            min: usize,
            max: usize,
        ) -> Result<(), (&'static str, String)> {
            match value {
                Some(v) if v < min || v > max => {
                    let rule = if max == usize::MAX {
                        format!("at least {min}")
                    } else {
                        format!("from {min} to {max}")
                    };
                    Err((key, format!("{v} is out of range: must be {rule}")))
                }
                _ => Ok(()),
            }
        }
        fn one_of(
            key: &'static str,
            value: Option<&str>,
            allowed: &[&str],
        ) -> Result<(), (&'static str, String)> {
            match value {
                Some(v) if !allowed.contains(&v) => {
                    let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
                    Err((
                        key,
                        format!(
                            "{v:?} is not allowed: must be one of {}",
                            allowed.join(", ")
                        ),
                    ))
                }
                _ => Ok(()),
            }
        }
        fn not_empty(key: &'static str, value: Option<&str>) -> Result<(), (&'static str, String)> {
            match value {
                Some(v) if v.trim().is_empty() => Err((
                    key,
                    "must not be empty (remove the key to leave it unset)".to_string(),
                )),
                _ => Ok(()),
            }
        }

        range("workers", self.workers, 0, crate::cli::MAX_WORKERS as usize)?;
        range(
            "memory-limit",
            self.memory_limit,
            crate::budget::MIN_MIB,
            crate::budget::MAX_MIB,
        )?;
        range(
            "sessions",
            self.sessions,
            1,
            crate::cli::MAX_SESSIONS as usize,
        )?;
        range(
            "api-batch-size",
            self.api_batch_size,
            1,
            crate::upload::api::MAX_BATCH,
        )?;
        range(
            "upload-concurrency",
            self.upload_concurrency,
            1,
            MAX_UPLOAD_CONCURRENCY,
        )?;
        one_of("progress", self.progress.as_deref(), PROGRESS_VALUES)?;
        one_of("blanks", self.blanks.as_deref(), BLANKS_VALUES)?;
        one_of("log-format", self.log_format.as_deref(), LOG_FORMAT_VALUES)?;
        not_empty(
            "output-directory",
            self.output_directory
                .as_deref()
                .map(|p| p.to_str().unwrap_or("?")),
        )?;
        not_empty("s3-bucket", self.s3_bucket.as_deref())?;
        not_empty("s3-endpoint", self.s3_endpoint.as_deref())?;
        not_empty("api-url", self.api_url.as_deref())?;
        not_empty("log-level", self.log_level.as_deref())?;
        not_empty("on-failure", self.on_failure.as_deref())?;
        if let Some(filter) = &self.log_level
            && let Err(e) = tracing_subscriber::EnvFilter::builder().parse(filter)
        {
            return Err((
                "log-level",
                format!("{filter:?} is not a log filter ({e}); write e.g. \"info\" or \"debug\""),
            ));
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The parser's message on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What to say about an unknown key: where the option lives instead, or the known key it
/// is probably a misspelling of.
fn hint(key: &str) -> Option<String> {
    let normalized = key.trim().to_ascii_lowercase().replace('_', "-");
    let normalized = normalized.trim_start_matches('-');
    let special = match normalized {
        "no-upload" => Some("write `upload = false` instead"),
        "no-local-vignettes" => Some("write `local-vignettes = false` instead"),
        "no-embed-measurements" => Some("write `embed-measurements = false` instead"),
        "directory" | "experiment-name" | "force" | "verify-remote" | "config" => {
            Some("that option belongs to one run: give it on the command line")
        }
        k if k.starts_with("aws") || k.contains("secret") || k.contains("access-key") => {
            Some("credentials do not belong in this file: put them in .env (see .env.example)")
        }
        _ => None,
    };
    if let Some(special) = special {
        return Some(special.to_string());
    }
    if KEYS.contains(&normalized) {
        return Some(format!("did you mean `{normalized}`?"));
    }
    KEYS.iter()
        .map(|k| (edit_distance(normalized, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// What to say about a `[section]` (or a dotted key): the file has none.
fn table_hint(name: &str, inner: &toml::de::DeTable<'_>) -> String {
    let joined = inner
        .keys()
        .map(|k| format!("{name}-{}", k.get_ref()))
        .find(|k| KEYS.contains(&k.as_str()));
    match joined {
        Some(key) => format!("this file has no sections: write `{key} = ...` at the top level"),
        None => "this file has no sections: write every key at the top level".to_string(),
    }
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/flowcam-pipeline.toml.example"
    ));

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new(FILE_NAME), text)
    }

    fn error(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    /// The example with every `# key = value` line uncommented.
    fn example_uncommented() -> String {
        EXAMPLE
            .lines()
            .map(|line| match key_line(line) {
                Some(_) => line.trim_start_matches('#').trim_start(),
                None => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The key of a commented-out `# key = value` line of the example.
    fn key_line(line: &str) -> Option<&str> {
        let rest = line.strip_prefix("# ")?;
        let (key, _) = rest.split_once(" = ")?;
        key.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            .then_some(key)
    }

    #[test]
    fn every_key_parses() {
        let text = r#"
            output-directory = "/data/out"
            workers = 4
            memory-limit = 256
            sessions = 2
            recursive = true
            settle-seconds = 30
            embed-measurements = false
            grey-vignettes = true
            blanks = "skip"
            sample-sheet = "/data/samples.csv"
            depth-from-name = false
            ecotaxa = true
            s3-bucket = "plankton"
            s3-endpoint = "https://store.example.org"
            s3-prefix = "flowcam/2023"
            api-url = "http://host:8000"
            api-batch-size = 500
            upload-concurrency = 16
            create-bucket = true
            upload = false
            upload-ecotaxa = true
            local-vignettes = false
            progress = "plain"
            log-format = "json"
            log-level = "flowcam_pipeline=debug,info"
            on-failure = "notify-send 'flowcam failed'"
        "#;
        let config = parse(text).unwrap();
        assert_eq!(
            config,
            Config {
                output_directory: Some(PathBuf::from("/data/out")),
                workers: Some(4),
                memory_limit: Some(256),
                sessions: Some(2),
                recursive: Some(true),
                settle_seconds: Some(30),
                embed_measurements: Some(false),
                grey_vignettes: Some(true),
                blanks: Some("skip".into()),
                sample_sheet: Some(PathBuf::from("/data/samples.csv")),
                depth_from_name: Some(false),
                ecotaxa: Some(true),
                s3_bucket: Some("plankton".into()),
                s3_endpoint: Some("https://store.example.org".into()),
                s3_prefix: Some("flowcam/2023".into()),
                api_url: Some("http://host:8000".into()),
                api_batch_size: Some(500),
                upload_concurrency: Some(16),
                create_bucket: Some(true),
                upload: Some(false),
                upload_ecotaxa: Some(true),
                local_vignettes: Some(false),
                progress: Some("plain".into()),
                log_format: Some("json".into()),
                log_level: Some("flowcam_pipeline=debug,info".into()),
                on_failure: Some("notify-send 'flowcam failed'".into()),
            }
        );
        // KEYS lists exactly the keys of the struct, in the same spelling.
        for key in KEYS {
            assert!(text.contains(&format!("\n            {key} = ")), "{key}");
        }
        assert_eq!(
            text.lines().filter(|l| l.contains(" = ")).count(),
            KEYS.len()
        );
    }

    #[test]
    fn empty_file_sets_nothing() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n\n").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named_with_its_line_and_a_suggestion() {
        let message = error("workers = 2\ns3-buckett = \"plankton\"\n");
        assert!(
            message.starts_with("flowcam-pipeline.toml: line 2: "),
            "{message}"
        );
        assert!(message.contains("unknown key `s3-buckett`"), "{message}");
        assert!(message.contains("did you mean `s3-bucket`?"), "{message}");
        assert!(
            message.contains("known keys: output-directory, "),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");

        let message = error("s3_bucket = \"plankton\"");
        assert!(message.contains("unknown key `s3_bucket`"), "{message}");
        assert!(message.contains("did you mean `s3-bucket`?"), "{message}");

        let message = error("no-upload = true");
        assert!(message.contains("unknown key `no-upload`; write `upload = false`"));
        let message = error("directory = \"/data/session\"");
        assert!(message.contains("give it on the command line"), "{message}");
        let message = error("aws-secret-access-key = \"x\"");
        assert!(message.contains("put them in .env"), "{message}");
        assert!(
            !message.contains("\"x\""),
            "a secret's value must not be echoed"
        );
        let message = error("colour = \"blue\"");
        assert!(
            message.contains("unknown key `colour` (known keys"),
            "{message}"
        );
    }

    #[test]
    fn unknown_tables_are_unknown_keys() {
        let message = error("workers = 1\n\n[s3]\nbucket = \"plankton\"\n");
        assert!(
            message.starts_with("flowcam-pipeline.toml: line 3: unknown key `s3`"),
            "{message}"
        );
        assert!(
            message.contains("write `s3-bucket = ...` at the top level"),
            "{message}"
        );
        let message = error("s3.bucket = \"plankton\"");
        assert!(message.contains("unknown key `s3`"), "{message}");
        // A known key written as a section is a value of the wrong type.
        let message = error("[upload]\nworkers = 2\n");
        assert!(
            message.contains("line 1: key `upload`: invalid type"),
            "{message}"
        );
        assert!(
            message.contains("unknown key `upload`") || message.contains("key `upload`"),
            "{message}"
        );
        let message = error("[general]\nworkers = 2\n");
        assert!(
            message.contains("write every key at the top level"),
            "{message}"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let message = error("sessions = 1\nworkers = \"two\"\n");
        assert_eq!(
            message,
            "flowcam-pipeline.toml: line 2: key `workers`: \
             invalid type: string \"two\", expected usize"
        );
        let message = error("upload = \"no\"");
        assert!(message.contains("key `upload`: invalid type"), "{message}");
        assert!(message.contains("expected a boolean"), "{message}");
        let message = error("s3-bucket = 42");
        assert!(
            message.contains("key `s3-bucket`: invalid type"),
            "{message}"
        );
        let message = error("workers = -1");
        assert!(message.contains("key `workers`: "), "{message}");
        let message = error("api-batch-size = 1.5");
        assert!(
            message.contains("key `api-batch-size`: invalid type"),
            "{message}"
        );
        let message = error("progress = [\"plain\"]");
        assert!(
            message.contains("key `progress`: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn out_of_range_names_the_key_and_the_range() {
        assert_eq!(
            error("api-batch-size = 0"),
            "flowcam-pipeline.toml: line 1: key `api-batch-size`: \
             0 is out of range: must be from 1 to 999"
        );
        assert!(
            error("api-batch-size = 1000").contains("1000 is out of range: must be from 1 to 999")
        );
        assert!(
            error("upload-concurrency = 0")
                .contains("key `upload-concurrency`: 0 is out of range: must be from 1 to 1024")
        );
        assert!(error("upload-concurrency = 1025").contains("key `upload-concurrency`: 1025"));
        assert!(
            error("sessions = 0")
                .contains("key `sessions`: 0 is out of range: must be from 1 to 256")
        );
        assert!(
            error("workers = 100000")
                .contains("key `workers`: 100000 is out of range: must be from 0 to 256")
        );
        assert!(
            error("memory-limit = 8")
                .contains("key `memory-limit`: 8 is out of range: must be from 64 to 1048576")
        );
        // The bounds themselves are fine.
        let config =
            parse("api-batch-size = 1\nupload-concurrency = 1024\nsessions = 1\nworkers = 0")
                .unwrap();
        assert_eq!(config.api_batch_size, Some(1));
        assert_eq!(config.upload_concurrency, Some(1024));
        assert_eq!(config.workers, Some(0));
        assert_eq!(
            parse("api-batch-size = 999").unwrap().api_batch_size,
            Some(999)
        );
    }

    #[test]
    fn values_outside_a_fixed_set_name_the_key_and_the_choices() {
        assert_eq!(
            error("\nprogress = \"fancy\""),
            "flowcam-pipeline.toml: line 2: key `progress`: \"fancy\" is not allowed: \
             must be one of \"auto\", \"bars\", \"plain\", \"off\""
        );
        let message = error("log-format = \"xml\"");
        assert!(
            message.contains(
                "key `log-format`: \"xml\" is not allowed: must be one of \"text\", \"json\""
            ),
            "{message}"
        );
        // Case matters, as on the command line.
        assert!(error("progress = \"Plain\"").contains("key `progress`"));
        for value in PROGRESS_VALUES {
            assert_eq!(
                parse(&format!("progress = \"{value}\""))
                    .unwrap()
                    .progress
                    .as_deref(),
                Some(*value)
            );
        }
        for value in LOG_FORMAT_VALUES {
            assert!(parse(&format!("log-format = \"{value}\"")).is_ok());
        }
    }

    #[test]
    fn empty_values_and_bad_filters_are_refused() {
        assert!(error("s3-bucket = \"\"").contains("key `s3-bucket`: must not be empty"));
        assert!(error("on-failure = \"  \"").contains("key `on-failure`: must not be empty"));
        assert!(
            error("output-directory = \"\"").contains("key `output-directory`: must not be empty")
        );
        let message = error("log-level = \"info=loud\"");
        assert!(
            message.contains("key `log-level`: \"info=loud\" is not a log filter"),
            "{message}"
        );
        // An empty prefix is allowed: it means "no prefix".
        assert_eq!(
            parse("s3-prefix = \"\"").unwrap().s3_prefix.as_deref(),
            Some("")
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let message = error("workers = 2\nsessions = 1\ns3-bucket = \"plankton\nupload = true\n");
        assert!(
            message.starts_with("flowcam-pipeline.toml: line 3, column "),
            "{message}"
        );
        assert!(message.contains("not valid TOML"), "{message}");
        assert!(!message.contains('\n'), "{message}");

        let message = error("workers = 2\nworkers = 3\n");
        assert!(
            message.starts_with("flowcam-pipeline.toml: line 2, "),
            "{message}"
        );
        let message = error("\n\nworkers 2\n");
        assert!(
            message.starts_with("flowcam-pipeline.toml: line 3, "),
            "{message}"
        );
    }

    #[test]
    fn line_columns_count_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é = 1\nx", 2), (1, 2));
        assert_eq!(line_column("é = 1\nx", 3), (1, 3));
        assert_eq!(line_column("é", 1), (1, 1));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn relative_output_directory_is_relative_to_the_file() {
        let config = Config::parse(
            Path::new("/etc/lab/flowcam-pipeline.toml"),
            "output-directory = \"results\"",
        )
        .unwrap();
        assert_eq!(
            config.output_directory,
            Some(PathBuf::from("/etc/lab/results"))
        );
        let config = Config::parse(
            Path::new("/etc/lab/flowcam-pipeline.toml"),
            "output-directory = \"/data/results\"",
        )
        .unwrap();
        assert_eq!(
            config.output_directory,
            Some(PathBuf::from("/data/results"))
        );
        assert_eq!(
            parse("output-directory = \"results\"")
                .unwrap()
                .output_directory,
            Some(PathBuf::from("results"))
        );
    }

    #[test]
    fn discover_without_a_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Config::discover(None, dir.path()).unwrap().is_none());
    }

    #[test]
    fn discover_finds_the_file_in_the_working_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "s3-bucket = \"plankton\"\n").unwrap();
        let (found, config) = Config::discover(None, dir.path()).unwrap().unwrap();
        assert_eq!(found, path);
        assert_eq!(config.s3_bucket.as_deref(), Some("plankton"));

        // A broken file found there is an error, not ignored.
        std::fs::write(&path, "s3-buckett = \"plankton\"\n").unwrap();
        let message = Config::discover(None, dir.path()).unwrap_err().to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("unknown key `s3-buckett`"), "{message}");
    }

    #[test]
    fn discover_with_an_explicit_path_uses_it_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "workers = 1\n").unwrap();
        let other = dir.path().join("lab.toml");
        std::fs::write(&other, "workers = 8\n").unwrap();

        let (found, config) = Config::discover(Some(&other), dir.path()).unwrap().unwrap();
        assert_eq!(found, other);
        assert_eq!(config.workers, Some(8));

        // Relative to the working folder.
        let (found, config) = Config::discover(Some(Path::new("lab.toml")), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(found, other);
        assert_eq!(config.workers, Some(8));
    }

    #[test]
    fn discover_with_a_missing_explicit_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // Even though the default file is there.
        std::fs::write(dir.path().join(FILE_NAME), "workers = 1\n").unwrap();
        let missing = dir.path().join("nowhere.toml");
        let e = Config::discover(Some(&missing), dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("{}: no such configuration file", missing.display())
        );
    }

    #[test]
    fn unreadable_file_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be.
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        let e = Config::discover(None, dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains(FILE_NAME), "{e}");
    }

    #[test]
    fn example_as_shipped_parses_and_sets_nothing() {
        assert_eq!(
            Config::parse(Path::new("flowcam-pipeline.toml.example"), EXAMPLE).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn example_documents_every_key() {
        let keys: Vec<&str> = EXAMPLE.lines().filter_map(key_line).collect();
        assert_eq!(keys, KEYS, "the example's keys, in order");
        // Each key has an explanation right above it.
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if key_line(line).is_some() {
                let above = lines[i - 1];
                assert!(
                    above.starts_with("# ") && key_line(above).is_none(),
                    "no explanation above `{line}`"
                );
            }
        }

        // Uncommented, every documented value is valid and every field is set. (Destructuring
        // without `..`: a new field that the example does not show fails to compile here.)
        let config = Config::parse(Path::new("example.toml"), &example_uncommented()).unwrap();
        let Config {
            output_directory,
            workers,
            memory_limit,
            sessions,
            recursive,
            settle_seconds,
            embed_measurements,
            grey_vignettes,
            blanks,
            sample_sheet,
            depth_from_name,
            ecotaxa,
            s3_bucket,
            s3_endpoint,
            s3_prefix,
            api_url,
            api_batch_size,
            upload_concurrency,
            create_bucket,
            upload,
            upload_ecotaxa,
            local_vignettes,
            progress,
            log_format,
            log_level,
            on_failure,
        } = config;
        assert!(output_directory.is_some());
        assert!(workers.is_some());
        assert!(memory_limit.is_some());
        assert!(sessions.is_some());
        assert!(recursive.is_some());
        assert!(settle_seconds.is_some());
        assert!(embed_measurements.is_some());
        assert!(grey_vignettes.is_some());
        assert!(blanks.is_some());
        assert!(sample_sheet.is_some());
        assert!(depth_from_name.is_some());
        assert!(ecotaxa.is_some());
        assert!(upload_ecotaxa.is_some());
        assert!(local_vignettes.is_some());
        assert!(s3_bucket.is_some());
        assert!(s3_endpoint.is_some());
        assert!(s3_prefix.is_some());
        assert!(api_url.is_some());
        assert!(api_batch_size.is_some());
        assert!(upload_concurrency.is_some());
        assert!(create_bucket.is_some());
        assert!(upload.is_some());
        assert!(progress.is_some());
        assert!(log_format.is_some());
        assert!(log_level.is_some());
        assert!(on_failure.is_some());
    }

    #[test]
    fn example_keeps_secrets_out() {
        assert!(EXAMPLE.contains(".env.example"));
        let lower = EXAMPLE.to_ascii_lowercase();
        for line in lower.lines().filter(|l| key_line(l).is_some()) {
            assert!(!line.contains("secret") && !line.contains("aws_"), "{line}");
        }
    }

    #[test]
    fn hints() {
        assert_eq!(hint("workerz").as_deref(), Some("did you mean `workers`?"));
        assert_eq!(
            hint("upload_concurrency").as_deref(),
            Some("did you mean `upload-concurrency`?")
        );
        assert_eq!(
            hint("--s3-bucket").as_deref(),
            Some("did you mean `s3-bucket`?")
        );
        assert_eq!(
            hint("embed-measurement").as_deref(),
            Some("did you mean `embed-measurements`?")
        );
        assert_eq!(hint("zebra"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}

//! The side files VisualSpreadsheet writes beside a session's `.lst`: `<session>.ctx` (an
//! INI file of the instrument's settings), `<session>_run_summary.txt` (indented
//! `Label: value` lines under headings), `<session>_notes.txt` (the operator's text) and
//! `<session>.cla` (class lists).
//!
//! They are untrusted like the `.lst`: any line ending (CRLF, LF, lone CR), UTF-8 or
//! Latin-1, a byte-order mark, keys outside any section, duplicate keys, garbage. Reading
//! never fails on content: what cannot be read is a [`Warning`] naming file, line and key,
//! and the rest is kept. Every key is kept raw, so nothing the instrument wrote is lost.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Side files larger than this are not read (a real `.ctx` is a few kilobytes, a `.cla`
/// a few hundred).
pub const MAX_SIDE_FILE: u64 = 16 << 20;

/// Something in a side file that could not be read, and was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub message: String,
}

impl Warning {
    pub fn new(file: &Path, line: usize, key: Option<&str>, message: impl Into<String>) -> Warning {
        Warning {
            file: file.to_path_buf(),
            line,
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The text of a side file: UTF-8 when it is, else Latin-1 (one byte, one character), a
/// byte-order mark dropped. `None` when the file does not exist; an error when it cannot
/// be read or is too large.
pub fn read_text(path: &Path) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    let file = match crate::flowcam::input::open_regular(path, path.parent().unwrap_or(path)) {
        Ok(file) => file,
        Err(_) if !path.exists() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIDE_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIDE_FILE {
        anyhow::bail!(
            "{}: larger than {} MiB, not a side file VisualSpreadsheet writes",
            path.display(),
            MAX_SIDE_FILE >> 20
        );
    }
    Ok(Some(decode(&bytes)))
}

/// UTF-8 when valid, else Latin-1; without a leading byte-order mark.
pub fn decode(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// Lines whatever their ending (CRLF, LF or a lone CR), numbered from 1.
pub fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .flat_map(|l| l.strip_suffix('\r').unwrap_or(l).split('\r'))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
}

/// A key's raw value and the line it was on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub value: String,
    #[serde(skip)]
    pub line: usize,
}

/// Sections of keys, in file order of sections; keys sorted within a section.
pub type Sections = Vec<(String, BTreeMap<String, Entry>)>;

/// An INI file (`.ctx`) or a run summary, as sections of raw values.
#[derive(Debug, Clone, Default)]
pub struct KeyValues {
    pub file: PathBuf,
    pub sections: Sections,
}

impl KeyValues {
    fn section_mut(&mut self, name: &str) -> &mut BTreeMap<String, Entry> {
        match self.sections.iter().position(|(n, _)| n == name) {
            Some(i) => &mut self.sections[i].1,
            None => {
                self.sections.push((name.to_string(), BTreeMap::new()));
                &mut self.sections.last_mut().expect("pushed").1
            }
        }
    }

    fn insert(&mut self, section: &str, key: &str, value: &str, line: usize) -> Option<Warning> {
        let file = self.file.clone();
        let entries = self.section_mut(section);
        let previous = entries.insert(
            key.to_string(),
            Entry {
                value: value.to_string(),
                line,
            },
        )?;
        (previous.value != value).then(|| {
            Warning::new(
                &file,
                line,
                Some(key),
                format!(
                    "given again in [{section}] (first on line {}, {:?}); the last value, {value:?}, is kept",
                    previous.line, previous.value
                ),
            )
        })
    }

    /// A key's value, trimmed; `None` when absent or empty.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.entry(section, key)
            .map(|e| e.value.trim())
            .filter(|v| !v.is_empty())
    }

    fn entry(&self, section: &str, key: &str) -> Option<&Entry> {
        self.sections
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(section))
            .and_then(|(_, keys)| keys.get(key))
    }

    /// A key's value as a number: the leading number of the value (`289.6065 ml`, `12X`),
    /// or a warning naming file, line and key when there is none.
    pub fn number(&self, section: &str, key: &str, warnings: &mut Vec<Warning>) -> Option<f64> {
        let value = self.get(section, key)?;
        match leading_number(value) {
            Some(n) => Some(n),
            None => {
                warnings.push(Warning::new(
                    &self.file,
                    self.entry(section, key).map_or(0, |e| e.line),
                    Some(key),
                    format!("{value:?} is not a number; left out"),
                ));
                None
            }
        }
    }

    /// Every section and key, raw, for `session.json`.
    pub fn raw(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.sections
            .iter()
            .map(|(name, keys)| {
                (
                    name.clone(),
                    keys.iter()
                        .map(|(k, e)| (k.clone(), e.value.clone()))
                        .collect(),
                )
            })
            .collect()
    }
}

/// The number a value starts with (`9.2500`, `289.6065 ml`, `12X`, `97.88%`), finite.
pub fn leading_number(value: &str) -> Option<f64> {
    let value = value.trim();
    let end = value
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(value.len(), |(i, _)| i);
    value[..end].parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The name of the section a key before any `[section]` is kept under.
pub const NO_SECTION: &str = "";

/// Parses a `.ctx`: `[Section]` headers and `Key=Value` lines.
pub fn parse_ini(file: &Path, text: &str) -> (KeyValues, Vec<Warning>) {
    let mut ini = KeyValues {
        file: file.to_path_buf(),
        sections: Vec::new(),
    };
    let mut warnings = Vec::new();
    let mut section = NO_SECTION.to_string();
    for (n, line) in lines(text) {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[') {
            match name.strip_suffix(']') {
                Some(name) => section = name.trim().to_string(),
                None => warnings.push(Warning::new(
                    file,
                    n,
                    None,
                    format!("{trimmed:?} is not a [section] header; ignored"),
                )),
            }
            continue;
        }
        match trimmed.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                if section == NO_SECTION {
                    warnings.push(Warning::new(
                        file,
                        n,
                        Some(key.trim()),
                        "comes before any [section]; kept under \"\"",
                    ));
                }
                warnings.extend(ini.insert(&section, key.trim(), value.trim(), n));
            }
            _ => warnings.push(Warning::new(
                file,
                n,
                None,
                format!("{trimmed:?} is not a key=value line; ignored"),
            )),
        }
    }
    (ini, warnings)
}

/// Parses a run summary: unindented `Heading:` lines, indented `Label:  value` lines.
pub fn parse_run_summary(file: &Path, text: &str) -> (KeyValues, Vec<Warning>) {
    let mut summary = KeyValues {
        file: file.to_path_buf(),
        sections: Vec::new(),
    };
    let mut warnings = Vec::new();
    let mut section = NO_SECTION.to_string();
    for (n, line) in lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        match line.trim().split_once(':') {
            Some((label, rest)) if !indented && rest.trim().is_empty() => {
                section = label.trim().to_string();
            }
            Some((label, value)) if !label.trim().is_empty() => {
                warnings.extend(summary.insert(&section, label.trim(), value.trim(), n));
            }
            _ => warnings.push(Warning::new(
                file,
                n,
                None,
                format!("{:?} is not a `Label: value` line; ignored", line.trim()),
            )),
        }
    }
    (summary, warnings)
}

/// One class of a class list: its name and its particles' ids, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Class {
    pub name: String,
    pub ids: Vec<u64>,
}

/// One class list of a `.cla`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassList {
    pub name: String,
    pub classes: Vec<Class>,
}

/// A `.cla`: its first line (`v3` in the real file, apparently the format) and its class
/// lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassFile {
    pub name: String,
    pub lists: Vec<ClassList>,
}

/// Parses a `.cla`, one value per line:
///
/// ```text
/// <header>             v3
/// <list count>
///   <list name>        repeated <list count> times
///   <class count>
///     <class name>     repeated <class count> times
///     OR               the class's rule
///     0
///     <id count>
///     <id>             repeated <id count> times
/// ```
///
/// Checked on the real session: it holds two lists, `19_10_Tank25` of 16
/// taxa (Cyclops holds particle 6648) and `19_10_Tank25_blankimagesremoved` with one
/// class, `blank images`, of 1,675 ids. A count larger than the lines left, or an id that
/// is not a number, is a warning, and what was read is kept.
pub fn parse_cla(file: &Path, text: &str) -> (ClassFile, Vec<Warning>) {
    let values: Vec<(usize, &str)> = lines(text)
        .map(|(n, l)| (n, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let mut reader = ClaReader {
        file,
        values: &values,
        at: 0,
        warnings: Vec::new(),
    };
    let mut cla = ClassFile {
        name: reader.text().unwrap_or_default(),
        lists: Vec::new(),
    };
    let lists = reader.count("list").unwrap_or(0);
    'lists: for _ in 0..lists {
        let Some(name) = reader.text() else {
            reader.warn(format!("the file ends before its {lists} class lists"));
            break;
        };
        let mut list = ClassList {
            name,
            classes: Vec::new(),
        };
        let classes = reader.count("class").unwrap_or(0);
        for _ in 0..classes {
            let Some(class) = reader.text() else {
                reader.warn(format!(
                    "list {:?} ends before its {classes} classes",
                    list.name
                ));
                cla.lists.push(list);
                break 'lists;
            };
            let (_rule, _flag) = (reader.text(), reader.text());
            let n = reader.count("particle").unwrap_or(0);
            let mut ids = Vec::new();
            for _ in 0..n {
                let Some((line, id)) = reader.next() else {
                    reader.warn(format!(
                        "class {class:?} announces {n} particles but the file ends after {}",
                        ids.len()
                    ));
                    list.classes.push(Class { name: class, ids });
                    cla.lists.push(list);
                    break 'lists;
                };
                match id.parse::<u64>() {
                    Ok(id) => ids.push(id),
                    Err(_) => reader.warn_at(
                        line,
                        format!("class {class:?}: {id:?} is not a particle id; left out"),
                    ),
                }
            }
            list.classes.push(Class { name: class, ids });
        }
        cla.lists.push(list);
    }
    if let Some((line, value)) = reader.next() {
        reader.warn_at(
            line,
            format!("{value:?} and what follows is past the last list; ignored"),
        );
    }
    (cla, reader.warnings)
}

struct ClaReader<'a> {
    file: &'a Path,
    values: &'a [(usize, &'a str)],
    at: usize,
    warnings: Vec<Warning>,
}

impl ClaReader<'_> {
    fn next(&mut self) -> Option<(usize, String)> {
        let value = self.values.get(self.at).map(|(n, v)| (*n, v.to_string()));
        self.at += 1;
        value
    }

    fn text(&mut self) -> Option<String> {
        self.next().map(|(_, v)| v)
    }

    /// A count; a warning (and `None`) when it is not one.
    fn count(&mut self, what: &str) -> Option<usize> {
        let (line, value) = self.next()?;
        match value.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.warn_at(line, format!("{value:?} is not a {what} count; read as 0"));
                None
            }
        }
    }

    fn warn(&mut self, message: String) {
        let line = self.values.last().map_or(0, |(n, _)| *n);
        self.warn_at(line, message);
    }

    fn warn_at(&mut self, line: usize, message: String) {
        self.warnings
            .push(Warning::new(self.file, line, None, message));
    }
}

//! The `.lst` particle list: a version line, `num-fields|N`, N `name|type` lines, then one
//! `|`-separated row per particle.
//!
//! The file is untrusted: every value is checked against its declared type, the geometry
//! must be non-negative, and `collage_file` must be a plain file name, so that a list can
//! never make us open `../../etc/passwd`. N varies with instrument and software version and
//! is read from the file, never assumed.
//!
//! Integer values are numbers, not text: `8875`, `+8875` and `08875` are one particle id,
//! and every integer value is handed on in its canonical decimal form (see [`parse_rows`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How many problems one error message lists before it summarises the rest.
const MAX_REPORTED: usize = 10;

/// The fields every row must have for us to cut vignettes.
pub const REQUIRED_FIELDS: [&str; 6] = [
    "id",
    "image_x",
    "image_y",
    "image_w",
    "image_h",
    "collage_file",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Int32,
    Int64,
    Double,
    Float,
    String,
    Timestamp,
    Guid,
}

impl FieldType {
    fn parse(text: &str) -> Option<FieldType> {
        Some(match text {
            "int32" => FieldType::Int32,
            "int64" => FieldType::Int64,
            "double" => FieldType::Double,
            "float" => FieldType::Float,
            "string" => FieldType::String,
            "timestamp" => FieldType::Timestamp,
            "guid" => FieldType::Guid,
            _ => return None,
        })
    }

    pub fn is_integer(self) -> bool {
        matches!(self, FieldType::Int32 | FieldType::Int64)
    }

    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            FieldType::Int32 | FieldType::Int64 | FieldType::Double | FieldType::Float
        )
    }

    fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            FieldType::Int32 => value.parse::<i32>().is_ok(),
            FieldType::Int64 => value.parse::<i64>().is_ok(),
            FieldType::Double | FieldType::Float => value.parse::<f64>().is_ok(),
            FieldType::String => true,
            FieldType::Timestamp => parse_timestamp(value).is_some(),
            FieldType::Guid => is_guid(value),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{value:?} is not a valid {}", self.name()))
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FieldType::Int32 => "int32",
            FieldType::Int64 => "int64",
            FieldType::Double => "double",
            FieldType::Float => "float",
            FieldType::String => "string",
            FieldType::Timestamp => "timestamp",
            FieldType::Guid => "guid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
}

/// A parsed, validated particle list.
#[derive(Debug, Clone)]
pub struct ParticleList {
    pub path: PathBuf,
    /// The format version line, e.g. `017`.
    pub version: String,
    pub fields: Vec<Field>,
    /// One entry per particle, values in field order, as written in the file except that
    /// integers are in their canonical decimal form (`+12` and `012` are `12`, `-0` is `0`).
    pub rows: Vec<Vec<String>>,
}

/// A problem with a `.lst` file, naming the file and, where it applies, the line and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LstError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed.
    pub more: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for LstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.path.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if let Some(field) = &p.field {
                write!(f, ": field {field}")?;
            }
            write!(f, ": {}", p.message)?;
        }
        if self.more > 0 {
            write!(f, "\n... and {} more problems", self.more)?;
        }
        Ok(())
    }
}

impl std::error::Error for LstError {}

impl ParticleList {
    pub fn read(path: &Path) -> anyhow::Result<ParticleList> {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Ok(Self::parse(path, &bytes)?)
    }

    /// Parses `bytes` as the contents of `path` (the path only names the file in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<ParticleList, LstError> {
        let mut rows = Vec::new();
        let header = parse_rows(path, std::io::Cursor::new(bytes), |part| {
            if let ListPart::Row(values) = part {
                rows.push(values.iter().map(|v| v.to_string()).collect())
            }
        })?;
        Ok(ParticleList {
            path: path.to_path_buf(),
            version: header.version,
            fields: header.fields,
            rows,
        })
    }

    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The list as CSV: a header of field names, then the rows (as [`ParticleList::rows`]).
    pub fn to_csv(&self) -> anyhow::Result<Vec<u8>> {
        let mut writer = csv::Writer::from_writer(Vec::with_capacity(self.rows.len() * 512));
        writer.write_record(self.fields.iter().map(|f| &f.name))?;
        for row in &self.rows {
            writer.write_record(row)?;
        }
        Ok(writer.into_inner()?)
    }
}

/// What a `.lst` declares, without its rows.
#[derive(Debug, Clone)]
pub struct ListHeader {
    pub version: String,
    pub fields: Vec<Field>,
    /// Rows that passed validation.
    pub particles: usize,
}

/// What [`parse_rows`] hands over, in order: the field declarations once, then each valid row.
pub enum ListPart<'a> {
    Fields(&'a [Field]),
    Row(&'a [&'a str]),
}

/// Reads the `.lst` at `path` straight into CSV (a header of field names, then the rows as
/// [`parse_rows`] hands them over: as written, integers canonical).
pub fn read_to_csv(path: &Path) -> anyhow::Result<(ListHeader, Vec<u8>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut csv = Vec::new();
    let header = write_csv(path, file, &mut csv)?;
    Ok((header, csv))
}

/// [`read_to_csv`] for a list already read (from a file opened with the checks of
/// [`crate::flowcam::input`]); `path` only names it in errors.
pub fn to_csv(path: &Path, bytes: &[u8]) -> anyhow::Result<(ListHeader, Vec<u8>)> {
    let mut csv = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    let header = write_csv(path, std::io::Cursor::new(bytes), &mut csv)?;
    Ok((header, csv))
}

/// Reads the list in `source` and writes it as CSV to `out` as it goes: memory stays the
/// same whatever the number of particles (a line at a time, and the ids seen). On an
/// error, what was written is to be thrown away.
pub fn write_csv(
    path: &Path,
    source: impl std::io::Read + std::io::Seek,
    out: impl std::io::Write,
) -> anyhow::Result<ListHeader> {
    let mut writer = csv::Writer::from_writer(out);
    let mut failed = None;
    let header = parse_rows(path, source, |part| {
        let written = match part {
            ListPart::Fields(fields) => writer.write_record(fields.iter().map(|f| &f.name)),
            ListPart::Row(values) => writer.write_record(values),
        };
        if let Err(e) = written {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    writer.flush()?;
    Ok(header)
}

/// The `.lst` files (any case) directly in `folder`, sorted: a session folder holds one.
/// Anything but a folder counts, a FIFO or a dangling link too, so that the session is
/// found and reading its list fails naming it, rather than the session passing unseen.
pub fn files_in(folder: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("lst"))
            && !path.is_dir()
        {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Validates `bytes` as the contents of `path` and hands its field declarations, then each
/// valid row, to `each`. Any problem makes the whole list an error (what was already handed
/// over is then to be dropped).
///
/// Integer fields (`int32`, `int64`) are numbers: the values handed over are in canonical
/// decimal form (`+8875` and `08875` become `8875`, `-0` becomes `0`, `-5` stays), and ids
/// are unique by numeric value. Without this, `8875`, `+8875` and `08875` would be three
/// particles whose vignettes all say `"id":8875`, and a `-0` position that validates as 0
/// would fail later in decollage, far from its `.lst` line. Everything downstream
/// (metadata.csv, vignette names, the manifest) sees the canonical form only.
///
/// Rows stream through borrowed slices of the file: a row whose values are already
/// canonical (every row the instrument writes) is handed over without allocating; only a
/// row with a value to rewrite allocates, for its rewritten values.
pub fn parse_rows(
    path: &Path,
    mut source: impl std::io::Read + std::io::Seek,
    mut each: impl FnMut(ListPart<'_>),
) -> Result<ListHeader, LstError> {
    let mut parser = Parser {
        path,
        problems: Vec::new(),
        more: 0,
    };
    // The instrument PCs run Windows; a file that is not UTF-8 throughout is read as
    // Latin-1 rather than rejected or silently mangled (decided before the first line).
    let latin1 = match is_utf8(&mut source).and_then(|utf8| {
        source.seek(std::io::SeekFrom::Start(0))?;
        Ok(!utf8)
    }) {
        Ok(latin1) => latin1,
        Err(e) => {
            parser.problem(None, None, format!("cannot read it: {e}"));
            return Err(parser.into_error());
        }
    };
    let mut lines = Lines {
        reader: std::io::BufReader::with_capacity(1 << 16, source),
        latin1,
        buffer: Vec::new(),
    };
    let mut read_error = None;
    let mut next_line = |lines: &mut Lines<_>| match lines.next() {
        Ok(line) => line,
        Err(e) => {
            read_error.get_or_insert(e);
            None
        }
    };
    // The header: the version, the field count, then that many declarations.
    let mut head: Vec<String> = Vec::new();
    let mut ended = false;
    let mut wanted = 2;
    while head.len() < wanted {
        let Some(line) = next_line(&mut lines) else {
            ended = true;
            break;
        };
        head.push(line);
        if head.len() == 2 {
            wanted += head[1]
                .strip_prefix("num-fields|")
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_DECLARED);
        }
    }
    // Blank lines at the end of the file are not part of it.
    if ended {
        while head.last().is_some_and(|l| l.trim().is_empty()) {
            head.pop();
        }
    }
    let header = {
        let head: Vec<&str> = head.iter().map(String::as_str).collect();
        parser.header(&head)
    };
    let Some((version, fields)) = header else {
        return Err(parser.into_error());
    };
    each(ListPart::Fields(&fields));
    let first_row = 2 + fields.len();
    let index = |name: &str| fields.iter().position(|f| f.name == name);
    let geometry: Vec<usize> = ["image_x", "image_y", "image_w", "image_h"]
        .iter()
        .filter_map(|n| index(n))
        .collect();
    let id_index = index("id").expect("checked by header");
    let collage_index = index("collage_file").expect("checked by header");
    let mut particles = 0;
    // Keyed by numeric value (int32 and int64 ids both fit an i64), so spellings of one
    // number collide and no id is copied into a String.
    let mut seen_ids: HashMap<i64, usize> = HashMap::new();
    let mut row = |line_no: usize, line: &str| {
        let values: Vec<&str> = line.split('|').collect();
        if values.len() != fields.len() {
            parser.problem(
                Some(line_no),
                None,
                format!("expected {} fields, found {}", fields.len(), values.len()),
            );
            return;
        }
        let mut ok = true;
        // (field index, canonical form) of integer values written otherwise; stays empty,
        // and unallocated, for a row that is canonical already.
        let mut canonical: Vec<(usize, String)> = Vec::new();
        for (i, (field, value)) in fields.iter().zip(&values).enumerate() {
            if let Err(message) = field.ty.check(value) {
                parser.problem(Some(line_no), Some(&field.name), message);
                ok = false;
            } else if field.ty.is_integer() && !is_canonical_integer(value) {
                let number: i64 = value.parse().expect("checked as an integer");
                canonical.push((i, number.to_string()));
            }
        }
        for &g in &geometry {
            let minimum = if fields[g].name.ends_with("_w") || fields[g].name.ends_with("_h") {
                1
            } else {
                0
            };
            if values[g].parse::<i64>().is_ok_and(|v| v < minimum) {
                parser.problem(
                    Some(line_no),
                    Some(&fields[g].name),
                    format!("{} must be at least {minimum}", values[g]),
                );
                ok = false;
            }
        }
        if let Err(message) = check_plain_file_name(values[collage_index]) {
            parser.problem(Some(line_no), Some("collage_file"), message);
            ok = false;
        }
        // An id that is not an integer was reported above. Keep the first line an id was
        // seen on, so every repeat names that line.
        if let Ok(id) = values[id_index].parse::<i64>() {
            if let Some(&first) = seen_ids.get(&id) {
                parser.problem(
                    Some(line_no),
                    Some("id"),
                    format!("particle id {id} already used on line {first}"),
                );
                ok = false;
            } else {
                seen_ids.insert(id, line_no);
            }
        }
        if ok {
            particles += 1;
            if canonical.is_empty() {
                each(ListPart::Row(&values));
            } else {
                let mut row: Vec<&str> = values.clone();
                for (i, value) in &canonical {
                    row[*i] = value;
                }
                each(ListPart::Row(&row));
            }
        }
    };
    // Blank lines are rows like any other, unless nothing but blank lines follows them.
    let mut blank: Vec<String> = Vec::new();
    let mut line_no = first_row;
    while let Some(line) = next_line(&mut lines) {
        line_no += 1;
        if line.trim().is_empty() {
            blank.push(line);
            continue;
        }
        let first_blank = line_no - blank.len();
        for (k, b) in blank.drain(..).enumerate() {
            row(first_blank + k, &b);
        }
        row(line_no, &line);
    }
    if let Some(e) = read_error {
        parser.problem(None, None, format!("cannot read it: {e}"));
    }
    if !parser.problems.is_empty() {
        return Err(parser.into_error());
    }
    Ok(ListHeader {
        version,
        fields,
        particles,
    })
}

/// The most field declarations read before checking them (a hostile count must not make
/// the header unbounded).
const MAX_DECLARED: usize = 100_000;

/// A `.lst`'s lines one at a time, without the line break (`\n` or `\r\n`).
struct Lines<R> {
    reader: R,
    latin1: bool,
    buffer: Vec<u8>,
}

impl<R: std::io::BufRead> Lines<R> {
    fn next(&mut self) -> std::io::Result<Option<String>> {
        self.buffer.clear();
        if self.reader.read_until(b'\n', &mut self.buffer)? == 0 {
            return Ok(None);
        }
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
        }
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
        }
        Ok(Some(if self.latin1 {
            self.buffer.iter().map(|&b| b as char).collect()
        } else {
            String::from_utf8_lossy(&self.buffer).into_owned()
        }))
    }
}

/// Whether everything `source` holds is UTF-8, read a block at a time.
fn is_utf8(source: &mut impl std::io::Read) -> std::io::Result<bool> {
    let mut buffer = vec![0u8; 1 << 16];
    let mut carried = 0;
    loop {
        let read = source.read(&mut buffer[carried..])?;
        if read == 0 {
            // A sequence cut off by the end of the file is not UTF-8.
            return Ok(carried == 0);
        }
        let filled = carried + read;
        match std::str::from_utf8(&buffer[..filled]) {
            Ok(_) => carried = 0,
            // A sequence cut by the block's end: carried over to the next block.
            Err(e) if e.error_len().is_none() => {
                let valid = e.valid_up_to();
                buffer.copy_within(valid..filled, 0);
                carried = filled - valid;
            }
            Err(_) => return Ok(false),
        }
    }
}

struct Parser<'a> {
    path: &'a Path,
    problems: Vec<Problem>,
    more: usize,
}

impl Parser<'_> {
    fn problem(&mut self, line: Option<usize>, field: Option<&str>, message: String) {
        if self.problems.len() < MAX_REPORTED {
            self.problems.push(Problem {
                line,
                field: field.map(str::to_string),
                message,
            });
        } else {
            self.more += 1;
        }
    }

    fn into_error(self) -> LstError {
        LstError {
            path: self.path.to_path_buf(),
            problems: self.problems,
            more: self.more,
        }
    }

    /// The version and field declarations, or `None` after recording why not.
    fn header(&mut self, lines: &[&str]) -> Option<(String, Vec<Field>)> {
        let version = lines.first().map(|l| l.trim()).unwrap_or("");
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            self.problem(
                Some(1),
                None,
                format!(
                    "expected a format version line such as 017, found {version:?}: \
                     this .lst layout is not supported (older software wrote other layouts)"
                ),
            );
            return None;
        }
        let count_line = lines.get(1).copied().unwrap_or("");
        let count = count_line
            .strip_prefix("num-fields|")
            .and_then(|n| n.trim().parse::<usize>().ok());
        let Some(count) = count.filter(|&n| n > 0) else {
            self.problem(
                Some(2),
                None,
                format!(
                    "expected 'num-fields|N', found {count_line:?}: \
                     this .lst layout is not supported"
                ),
            );
            return None;
        };
        if lines.len().saturating_sub(2) < count {
            self.problem(
                None,
                None,
                format!(
                    "declares {count} fields but ends after {} field lines",
                    lines.len().saturating_sub(2)
                ),
            );
            return None;
        }
        let mut fields: Vec<Field> = Vec::with_capacity(count);
        for (i, line) in lines[2..2 + count].iter().enumerate() {
            let line_no = i + 3;
            let Some((name, ty)) = line.split_once('|') else {
                self.problem(
                    Some(line_no),
                    None,
                    format!("expected a field declaration 'name|type', found {line:?}"),
                );
                continue;
            };
            let name = name.trim();
            let Some(ty) = FieldType::parse(ty.trim()) else {
                self.problem(
                    Some(line_no),
                    Some(name),
                    format!("unsupported field type {:?}", ty.trim()),
                );
                continue;
            };
            if name.is_empty() || fields.iter().any(|f| f.name == name) {
                self.problem(
                    Some(line_no),
                    None,
                    format!("empty or repeated field name {name:?}"),
                );
                continue;
            }
            fields.push(Field {
                name: name.to_string(),
                ty,
            });
        }
        if !self.problems.is_empty() {
            return None;
        }
        for required in REQUIRED_FIELDS {
            match fields.iter().find(|f| f.name == required) {
                None => self.problem(
                    None,
                    Some(required),
                    "required field is not declared".to_string(),
                ),
                Some(f) if required == "collage_file" && f.ty != FieldType::String => self.problem(
                    None,
                    Some(required),
                    format!("declared as {}, expected string", f.ty.name()),
                ),
                Some(f)
                    if required != "collage_file"
                        && !matches!(f.ty, FieldType::Int32 | FieldType::Int64) =>
                {
                    self.problem(
                        None,
                        Some(required),
                        format!("declared as {}, expected an integer type", f.ty.name()),
                    )
                }
                Some(_) => {}
            }
        }
        if !self.problems.is_empty() {
            return None;
        }
        Some((version.to_string(), fields))
    }
}

/// Whether an integer value (already known to parse) is written the way `i64::to_string`
/// writes it: no sign but a minus, no leading zeros, no `-0`.
fn is_canonical_integer(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    let minus_zero = digits == "0" && digits.len() != value.len();
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !leading_zero && !minus_zero
}

/// Accepts only a bare file name: no folders, no `..`, nothing absolute, no drive letters.
pub fn check_plain_file_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', ':', '\0'])
        || name.starts_with('~');
    if bad {
        Err(format!(
            "{name:?} is not a plain file name inside the session folder"
        ))
    } else {
        Ok(())
    }
}

/// A `.lst` timestamp, `YYYY-MM-DDTHH:MM:SS[.fff]` (a space instead of `T` is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp<'a> {
    pub date_time: chrono::NaiveDateTime,
    /// The fraction of a second as written (e.g. `057`), if any.
    pub fraction: Option<&'a str>,
}

pub fn parse_timestamp(value: &str) -> Option<Timestamp<'_>> {
    let (whole, fraction) = match value.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (w, Some(f)),
        Some(_) => return None,
        None => (value, None),
    };
    let date_time = chrono::NaiveDateTime::parse_from_str(whole, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(whole, "%Y-%m-%d %H:%M:%S"))
        .ok()?;
    Some(Timestamp {
        date_time,
        fraction,
    })
}

fn is_guid(value: &str) -> bool {
    let inner = value
        .strip_prefix('{')
        .and_then(|v| v.strip_suffix('}'))
        .unwrap_or(value);
    let groups: Vec<&str> = inner.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

//! Tests of the `.lst` particle-list parser: the committed real file, synthetic lists with
//! varying field counts and orders, line endings, and every kind of bad header and row.

use flowcam_pipeline::flowcam::lst::*;
use std::path::{Path, PathBuf};

const PATH: &str = "/data/Tank_7/Tank_7.lst";

/// The six fields every list must declare, as the instrument types them.
const MINIMAL: [(&str, &str); 6] = [
    ("id", "int32"),
    ("image_x", "int32"),
    ("image_y", "int32"),
    ("image_w", "int32"),
    ("image_h", "int32"),
    ("collage_file", "string"),
];

/// A small list with one field of each type the bad-row tests need. With 9 fields the
/// header takes lines 1..=11, so the first row is line 12 and the second line 13.
const TYPED: [(&str, &str); 9] = [
    ("id", "int32"),
    ("image_x", "int32"),
    ("image_y", "int32"),
    ("image_w", "int32"),
    ("image_h", "int32"),
    ("area", "double"),
    ("timestamp", "timestamp"),
    ("collage_file", "string"),
    ("image_id", "guid"),
];

const GOOD_TYPED: [&str; 9] = [
    "1",
    "10",
    "20",
    "30",
    "40",
    "12.5",
    "2023-12-20T14:03:18.057",
    "Tank_7_images_000001.tif",
    "73C848A3-582F-4813-B05B-8299DD907A0C",
];

/// The header of a format-017 list declaring `fields`, one line each, LF-terminated.
fn header(fields: &[(&str, &str)]) -> String {
    let mut text = format!("017\nnum-fields|{}\n", fields.len());
    for (name, ty) in fields {
        text.push_str(&format!("{name}|{ty}\n"));
    }
    text
}

/// A whole list: `header(fields)` then `rows`, each LF-terminated.
fn lst(fields: &[(&str, &str)], rows: &[String]) -> String {
    let mut text = header(fields);
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

fn parse(text: &str) -> Result<ParticleList, LstError> {
    ParticleList::parse(Path::new(PATH), text.as_bytes())
}

fn parse_ok(text: &str) -> ParticleList {
    match parse(text) {
        Ok(list) => list,
        Err(e) => panic!("expected the list to parse, got:\n{e}\n--- input ---\n{text}"),
    }
}

fn parse_err(text: &str) -> LstError {
    match parse(text) {
        Ok(list) => panic!(
            "expected an error, parsed {} rows\n--- input ---\n{text}",
            list.rows.len()
        ),
        Err(e) => {
            assert_eq!(e.path, Path::new(PATH));
            e
        }
    }
}

fn value<'a>(list: &'a ParticleList, row: usize, name: &str) -> &'a str {
    let i = list
        .field_index(name)
        .unwrap_or_else(|| panic!("no field {name}"));
    &list.rows[row][i]
}

/// The `TYPED` row with `id` and the given fields replaced.
fn typed_row(id: &str, changes: &[(&str, &str)]) -> String {
    let mut values: Vec<&str> = GOOD_TYPED.to_vec();
    values[0] = id;
    for (name, v) in changes {
        let i = TYPED
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no field {name}"));
        values[i] = v;
    }
    values.join("|")
}

/// Asserts that `err` holds exactly one problem, on `line` and `field`, whose message
/// contains every one of `needles`, and that its display names path, line and field.
fn assert_one_problem(
    err: &LstError,
    line: Option<usize>,
    field: Option<&str>,
    needles: &[&str],
) -> String {
    let shown = err.to_string();
    assert_eq!(err.problems.len(), 1, "{shown}");
    assert_eq!(err.more, 0, "{shown}");
    let p = &err.problems[0];
    assert_eq!(p.line, line, "{shown}");
    assert_eq!(p.field.as_deref(), field, "{shown}");
    for needle in needles {
        assert!(
            p.message.contains(needle),
            "message {:?} lacks {needle:?}",
            p.message
        );
    }
    let mut prefix = PATH.to_string();
    if let Some(line) = line {
        prefix.push_str(&format!(":{line}"));
    }
    if let Some(field) = field {
        prefix.push_str(&format!(": field {field}"));
    }
    prefix.push_str(": ");
    assert!(
        shown.starts_with(&prefix),
        "{shown:?} does not start with {prefix:?}"
    );
    assert!(shown.ends_with(&p.message), "{shown:?}");
    shown
}

/// A list of `TYPED` whose second row (line 13) is `bad`; the first row is good.
fn with_bad_second_row(bad: &str) -> String {
    lst(&TYPED, &[typed_row("1", &[]), bad.to_string()])
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/19_10_Tank25_blanksremoved/19_10_Tank25_blanksremoved.lst")
}

// --- The committed real file ----------------------------------------------------------

#[test]
fn committed_fixture_parses() {
    let path = fixture_path();
    let list = ParticleList::read(&path).unwrap();
    assert_eq!(list.path, path);
    assert_eq!(list.version, "017");
    assert_eq!(list.fields.len(), 53);
    assert_eq!(list.rows.len(), 102);
    assert!(list.rows.iter().all(|r| r.len() == 53));

    let ty = |name: &str| list.fields[list.field_index(name).unwrap()].ty;
    assert_eq!(list.fields[0].name, "id");
    assert_eq!(list.fields[52].name, "image_id");
    assert_eq!(ty("id"), FieldType::Int32);
    assert_eq!(ty("image_h"), FieldType::Int32);
    assert_eq!(ty("cal_const"), FieldType::Double);
    assert_eq!(ty("feret_min_angle"), FieldType::Double);
    assert_eq!(ty("timestamp"), FieldType::Timestamp);
    assert_eq!(ty("collage_file"), FieldType::String);
    assert_eq!(ty("image_id"), FieldType::Guid);
    assert!(ty("abd_area").is_numeric());
    assert!(!ty("collage_file").is_numeric());

    // The declarations and rows, read independently of the parser, match what it kept.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 53 + 102);
    for (field, line) in list.fields.iter().zip(&lines[2..55]) {
        assert_eq!(format!("{}|{}", field.name, field.ty.name()), *line);
    }
    for (row, line) in list.rows.iter().zip(&lines[55..]) {
        assert_eq!(row.join("|"), *line);
    }
    assert_eq!(value(&list, 0, "id"), "8875");
    assert_eq!(value(&list, 0, "image_w"), "38");
    assert_eq!(value(&list, 0, "image_h"), "73");
    assert!(
        list.rows
            .iter()
            .all(|r| r[51] == "19_10_Tank25_blanksremoved_images_000009.tif")
    );
    let ids: std::collections::HashSet<&str> = list.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids.len(), 102);
    for row in &list.rows {
        let ts = parse_timestamp(&row[50]).expect("fixture timestamps parse");
        assert_eq!(ts.fraction.map(str::len), Some(3));
    }

    // to_csv: 53 names then 102 lines, which read back to the same values.
    let csv_bytes = list.to_csv().unwrap();
    let csv_text = String::from_utf8(csv_bytes.clone()).unwrap();
    let csv_lines: Vec<&str> = csv_text.lines().collect();
    assert_eq!(csv_lines.len(), 103);
    assert_eq!(csv_lines[0].split(',').count(), 53);
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    let names: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let declared: Vec<String> = list.fields.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names, declared);
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(records, list.rows);

    // The streaming path ReadMetadata uses writes exactly the same CSV.
    let (header, streamed) = read_to_csv(&fixture_path()).unwrap();
    assert_eq!(streamed, csv_bytes);
    assert_eq!(header.particles, 102);
    assert_eq!(header.fields, list.fields);
}

#[test]
fn fields_serialise_as_name_and_lowercase_type() {
    let list = ParticleList::read(&fixture_path()).unwrap();
    let json = serde_json::to_value(&list.fields[..2]).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"name": "id", "type": "int32"},
            {"name": "image_x", "type": "int32"},
        ])
    );
    let back: Vec<Field> = serde_json::from_value(json).unwrap();
    assert_eq!(back, list.fields[..2]);
}

#[test]
fn read_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.lst");
    let e = ParticleList::read(&missing).unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
}

// --- Varying number and order of fields -----------------------------------------------

#[test]
fn only_the_six_required_fields() {
    let text = lst(
        &MINIMAL,
        &["1|0|0|5|6|a.tif".into(), "2|5|7|8|9|b.tif".into()],
    );
    let list = parse_ok(&text);
    assert_eq!(list.fields.len(), 6);
    assert_eq!(list.rows.len(), 2);
    for (f, (name, ty)) in list.fields.iter().zip(MINIMAL) {
        assert_eq!(f.name, name);
        assert_eq!(f.ty.name(), ty);
    }
    assert_eq!(value(&list, 1, "id"), "2");
    assert_eq!(value(&list, 1, "image_x"), "5");
    assert_eq!(value(&list, 1, "image_y"), "7");
    assert_eq!(value(&list, 1, "image_w"), "8");
    assert_eq!(value(&list, 1, "image_h"), "9");
    assert_eq!(value(&list, 1, "collage_file"), "b.tif");
    assert_eq!(value(&list, 0, "image_x"), "0");
}

#[test]
fn a_header_without_rows_is_an_empty_list() {
    let list = parse_ok(&header(&MINIMAL));
    assert_eq!(list.rows.len(), 0);
    assert_eq!(list.fields.len(), 6);
    let csv = String::from_utf8(list.to_csv().unwrap()).unwrap();
    assert_eq!(csv, "id,image_x,image_y,image_w,image_h,collage_file\n");
}

const EXTRA_TYPES: [&str; 7] = [
    "int32",
    "double",
    "string",
    "timestamp",
    "guid",
    "int64",
    "float",
];

/// A distinct, valid value for `field` in `row`, so that a value found under the wrong
/// name is noticed.
fn value_for(field: usize, ty: &str, name: &str, row: usize) -> String {
    match name {
        "id" => return (100 + row).to_string(),
        "image_x" => return (row * 3).to_string(),
        "image_y" => return (row * 5 + 1).to_string(),
        "image_w" => return (row + 11).to_string(),
        "image_h" => return (row + 22).to_string(),
        "collage_file" => return format!("s_images_{row:06}.tif"),
        _ => {}
    }
    match ty {
        "int32" => (field * 1000 + row).to_string(),
        "int64" => (field as i64 * 10_000_000_000 + row as i64).to_string(),
        "double" => format!("{field}.{row}5"),
        "float" => format!("-{field}.{row}"),
        "string" => format!("text {field} row {row}"),
        "timestamp" => format!(
            "2023-12-{:02}T14:{:02}:{:02}.{row:03}",
            1 + row % 28,
            field % 60,
            row % 60
        ),
        "guid" => format!("{field:08X}-ABCD-4EF0-8123-{row:012X}"),
        other => panic!("no value for {other}"),
    }
}

/// Writes a list of `fields` with `n_rows` rows, parses it, and checks every value landed
/// under its own name.
fn check_round_trip(fields: &[(String, String)], n_rows: usize) -> ParticleList {
    let declared: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let rows: Vec<String> = (0..n_rows)
        .map(|r| {
            declared
                .iter()
                .enumerate()
                .map(|(i, (n, t))| value_for(i, t, n, r))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    let list = parse_ok(&lst(&declared, &rows));
    assert_eq!(list.fields.len(), fields.len());
    assert_eq!(list.rows.len(), n_rows);
    for (f, (n, t)) in list.fields.iter().zip(&declared) {
        assert_eq!((f.name.as_str(), f.ty.name()), (*n, *t));
    }
    for r in 0..n_rows {
        for (i, (n, t)) in declared.iter().enumerate() {
            assert_eq!(
                value(&list, r, n),
                value_for(i, t, n, r),
                "row {r} field {n}"
            );
        }
    }
    list
}

#[test]
fn sixty_fields_with_required_ones_scattered() {
    // Required fields at the start, middle and very end; 54 extras of every type between.
    let positions = [0, 7, 19, 33, 48, 59];
    let mut required = MINIMAL.iter();
    let mut extra = 0;
    let fields: Vec<(String, String)> = (0..60)
        .map(|i| {
            if positions.contains(&i) {
                let (n, t) = required.next().unwrap();
                (n.to_string(), t.to_string())
            } else {
                extra += 1;
                (
                    format!("extra_{extra:02}"),
                    EXTRA_TYPES[extra % EXTRA_TYPES.len()].to_string(),
                )
            }
        })
        .collect();
    let list = check_round_trip(&fields, 4);
    assert_eq!(list.fields.len(), 60);
    assert_eq!(list.field_index("id"), Some(0));
    assert_eq!(list.field_index("collage_file"), Some(59));
    assert_eq!(list.field_index("image_h"), Some(48));
    assert_eq!(list.field_index("no_such_field"), None);
    assert_eq!(value(&list, 3, "collage_file"), "s_images_000003.tif");
    assert_eq!(value(&list, 2, "image_w"), "13");
}

#[test]
fn shuffled_field_orders() {
    let base: Vec<(String, String)> = TYPED
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .chain((0..5).map(|k| (format!("x{k}"), EXTRA_TYPES[k].to_string())))
        .collect();
    let mut orders = vec![base.iter().rev().cloned().collect::<Vec<_>>()];
    // A few deterministic pseudo-random permutations (Fisher-Yates on an LCG).
    for seed in 1..=8u64 {
        let mut fields = base.clone();
        let mut state = seed;
        for i in (1..fields.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            fields.swap(i, (state >> 33) as usize % (i + 1));
        }
        orders.push(fields);
    }
    for fields in &orders {
        let list = check_round_trip(fields, 3);
        // to_csv keeps the file's order, not a canonical one.
        let csv = String::from_utf8(list.to_csv().unwrap()).unwrap();
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(csv.lines().next().unwrap(), names.join(","));
    }
}

// --- Line endings ---------------------------------------------------------------------

#[test]
fn crlf_and_trailing_blank_lines_parse_like_lf() {
    let lf = lst(
        &TYPED,
        &[
            typed_row("1", &[]),
            typed_row("2", &[("collage_file", "Tank_7_images_000002.tif")]),
        ],
    );
    let reference = parse_ok(&lf);
    assert_eq!(reference.rows.len(), 2);
    let crlf = lf.replace('\n', "\r\n");
    let variants = [
        crlf.clone(),
        format!("{lf}\n"),
        format!("{lf}\n\n\n"),
        format!("{lf}  \n\t\n"),
        format!("{crlf}\r\n"),
        format!("{crlf}\r\n\r\n"),
        lf.trim_end_matches('\n').to_string(),
        crlf.trim_end_matches("\r\n").to_string(),
    ];
    for text in &variants {
        let list = parse_ok(text);
        assert_eq!(list.version, reference.version, "{text:?}");
        assert_eq!(list.fields, reference.fields, "{text:?}");
        assert_eq!(list.rows, reference.rows, "{text:?}");
        assert_eq!(
            list.to_csv().unwrap(),
            reference.to_csv().unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn crlf_errors_report_the_same_line_and_no_carriage_return() {
    let lf = with_bad_second_row(&typed_row("2", &[("area", "wide")]));
    let crlf = format!("{}\r\n\r\n", lf.replace('\n', "\r\n"));
    let a = parse_err(&lf);
    let b = parse_err(&crlf);
    assert_eq!(a, b);
    assert_one_problem(&b, Some(13), Some("area"), &["\"wide\"", "double"]);
    assert!(!b.to_string().contains('\r'));
}

// --- Bad rows -------------------------------------------------------------------------

#[test]
fn rows_with_the_wrong_number_of_fields() {
    let good = typed_row("2", &[]);
    let too_few = good.rsplit_once('|').unwrap().0.to_string();
    let too_many = format!("{good}|extra");
    let e = parse_err(&with_bad_second_row(&too_few));
    assert_one_problem(&e, Some(13), None, &["expected 9 fields, found 8"]);
    let e = parse_err(&with_bad_second_row(&too_many));
    assert_one_problem(&e, Some(13), None, &["expected 9 fields, found 10"]);
    // A blank line between rows is a row with one field, not skipped.
    let e = parse_err(&lst(
        &TYPED,
        &[typed_row("1", &[]), String::new(), typed_row("2", &[])],
    ));
    assert_one_problem(&e, Some(13), None, &["expected 9 fields, found 1"]);
}

#[test]
fn int32_values_that_are_not_integers() {
    for bad in ["1.5", "", "abc", "2147483648", "1e3", " 7", "0x10"] {
        for field in ["id", "image_x", "image_h"] {
            let row = if field == "id" {
                typed_row(bad, &[])
            } else {
                typed_row("2", &[(field, bad)])
            };
            let e = parse_err(&with_bad_second_row(&row));
            let quoted = format!("{bad:?}");
            assert_one_problem(&e, Some(13), Some(field), &[&quoted, "int32"]);
        }
    }
    // The extremes of int32 are fine (as values; geometry has its own limits).
    let list = parse_ok(&lst(
        &TYPED,
        &[typed_row("-2147483648", &[]), typed_row("2147483647", &[])],
    ));
    assert_eq!(value(&list, 0, "id"), "-2147483648");
}

#[test]
fn doubles_that_are_not_numbers() {
    for bad in ["abc", "", "1,5", "12.5.1", "--1"] {
        let e = parse_err(&with_bad_second_row(&typed_row("2", &[("area", bad)])));
        let quoted = format!("{bad:?}");
        assert_one_problem(&e, Some(13), Some("area"), &[&quoted, "double"]);
    }
    for good in ["0", "-3", "1e-3", "613.0000"] {
        parse_ok(&with_bad_second_row(&typed_row("2", &[("area", good)])));
    }
}

#[test]
fn bad_timestamps() {
    for bad in [
        "",
        "yesterday",
        "2023-12-20",
        "2023-13-01T00:00:00",
        "2023-02-30T00:00:00",
        "2023-12-20T25:00:00",
        "2023-12-20T14:03:18.",
        "2023-12-20T14:03:18.05x",
        "2023-12-20T14:03:18Z",
        "20/12/2023 14:03:18",
    ] {
        let e = parse_err(&with_bad_second_row(&typed_row("2", &[("timestamp", bad)])));
        let quoted = format!("{bad:?}");
        assert_one_problem(&e, Some(13), Some("timestamp"), &[&quoted, "timestamp"]);
    }
    parse_ok(&with_bad_second_row(&typed_row(
        "2",
        &[("timestamp", "2023-12-20 14:03:18")],
    )));
}

#[test]
fn bad_guids() {
    for bad in [
        "",
        "not-a-guid",
        "73C848A3-582F-4813-B05B-8299DD907A0",
        "73C848A3-582F-4813-B05B-8299DD907A0CC",
        "73C848A3582F4813B05B8299DD907A0C",
        "G3C848A3-582F-4813-B05B-8299DD907A0C",
        "73C848A3-582F-4813-B05B8299-DD907A0C",
        "{73C848A3-582F-4813-B05B-8299DD907A0C",
        "73C848A3-582F-4813-B05B-8299DD907A0C-0000",
    ] {
        let e = parse_err(&with_bad_second_row(&typed_row("2", &[("image_id", bad)])));
        let quoted = format!("{bad:?}");
        assert_one_problem(&e, Some(13), Some("image_id"), &[&quoted, "guid"]);
    }
    for good in [
        "{73C848A3-582F-4813-B05B-8299DD907A0C}",
        "73c848a3-582f-4813-b05b-8299dd907a0c",
    ] {
        parse_ok(&with_bad_second_row(&typed_row("2", &[("image_id", good)])));
    }
}

#[test]
fn negative_positions() {
    for field in ["image_x", "image_y"] {
        for bad in ["-1", "-2147483648"] {
            let e = parse_err(&with_bad_second_row(&typed_row("2", &[(field, bad)])));
            let needle = format!("{bad} must be at least 0");
            assert_one_problem(&e, Some(13), Some(field), &[&needle]);
        }
        parse_ok(&with_bad_second_row(&typed_row("2", &[(field, "0")])));
    }
}

#[test]
fn empty_or_negative_sizes() {
    for field in ["image_w", "image_h"] {
        for bad in ["0", "-1", "-40"] {
            let e = parse_err(&with_bad_second_row(&typed_row("2", &[(field, bad)])));
            let needle = format!("{bad} must be at least 1");
            assert_one_problem(&e, Some(13), Some(field), &[&needle]);
        }
        parse_ok(&with_bad_second_row(&typed_row("2", &[(field, "1")])));
    }
}

#[test]
fn geometry_limits_also_apply_to_int64_declarations() {
    let fields = [
        ("id", "int64"),
        ("image_x", "int64"),
        ("image_y", "int64"),
        ("image_w", "int64"),
        ("image_h", "int64"),
        ("collage_file", "string"),
    ];
    let e = parse_err(&lst(&fields, &["1|0|0|0|5|a.tif".into()]));
    assert_one_problem(&e, Some(9), Some("image_w"), &["0 must be at least 1"]);
    let e = parse_err(&lst(&fields, &["1|-5000000000|0|5|5|a.tif".into()]));
    assert_one_problem(&e, Some(9), Some("image_x"), &["must be at least 0"]);
}

const BAD_NAMES: [&str; 12] = [
    "../x.tif",
    "/etc/passwd",
    "a/b.tif",
    "C:\\x.tif",
    "..",
    "",
    ".",
    "..\\..\\x.tif",
    "C:x.tif",
    "~/x.tif",
    "~x.tif",
    "a\0b.tif",
];

#[test]
fn collage_files_that_are_not_plain_names() {
    for bad in BAD_NAMES {
        let e = parse_err(&with_bad_second_row(&typed_row(
            "2",
            &[("collage_file", bad)],
        )));
        let quoted = format!("{bad:?}");
        let shown = assert_one_problem(
            &e,
            Some(13),
            Some("collage_file"),
            &[&quoted, "not a plain file name"],
        );
        assert!(shown.contains(PATH));
    }
}

#[test]
fn check_plain_file_name_accepts_only_bare_names() {
    for good in [
        "x_images_000001.tif",
        "19_10_Tank25_blanksremoved_images_000009.tif",
        "...tif",
        "a..b.tif",
        "name with spaces.tif",
        "\u{e9}t\u{e9}.tif",
    ] {
        assert_eq!(check_plain_file_name(good), Ok(()), "{good:?}");
    }
    for bad in BAD_NAMES {
        let message = check_plain_file_name(bad).unwrap_err();
        assert!(message.contains(&format!("{bad:?}")), "{message}");
    }
}

#[test]
fn duplicate_ids_name_the_first_line() {
    // id 1 on lines 12, 14 and 16; id 2 on lines 13 and 15.
    let text = lst(
        &TYPED,
        &[
            typed_row("1", &[]),
            typed_row("2", &[]),
            typed_row("1", &[]),
            typed_row("2", &[]),
            typed_row("1", &[]),
        ],
    );
    let e = parse_err(&text);
    let got: Vec<(Option<usize>, Option<&str>, &str)> = e
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_deref(), p.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Some(14),
                Some("id"),
                "particle id 1 already used on line 12"
            ),
            (
                Some(15),
                Some("id"),
                "particle id 2 already used on line 13"
            ),
            (
                Some(16),
                Some("id"),
                "particle id 1 already used on line 12"
            ),
        ]
    );
    assert!(e.to_string().contains(&format!(
        "{PATH}:16: field id: particle id 1 already used on line 12"
    )));
}

// --- Integers are numbers (issue 10) ------------------------------------------------

#[test]
fn spellings_of_one_id_are_a_duplicate() {
    // 8875 on line 12, then +8875 (line 13) and 08875 (line 14): one number, three times.
    let text = lst(
        &TYPED,
        &[
            typed_row("8875", &[]),
            typed_row("+8875", &[]),
            typed_row("08875", &[]),
        ],
    );
    let e = parse_err(&text);
    let got: Vec<(Option<usize>, Option<&str>, &str)> = e
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_deref(), p.message.as_str()))
        .collect();
    let message = "particle id 8875 already used on line 12";
    assert_eq!(
        got,
        [
            (Some(13), Some("id"), message),
            (Some(14), Some("id"), message)
        ]
    );
    let shown = e.to_string();
    assert!(
        shown.contains(&format!("{PATH}:13: field id: {message}")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{PATH}:14: field id: {message}")),
        "{shown}"
    );

    // The same through the file ReadMetadata reads.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.lst");
    std::fs::write(&path, &text).unwrap();
    let shown = read_to_csv(&path).unwrap_err().to_string();
    let expected = format!("{}:14: field id: {message}", path.display());
    assert!(shown.contains(&expected), "{shown}");
}

/// Fields with integers of both widths beside the required ones, and a double.
const INTEGERS: [(&str, &str); 9] = [
    ("id", "int32"),
    ("image_x", "int32"),
    ("image_y", "int32"),
    ("image_w", "int32"),
    ("image_h", "int32"),
    ("src_x", "int32"),
    ("big", "int64"),
    ("area", "double"),
    ("collage_file", "string"),
];

#[test]
fn integers_are_handed_on_in_canonical_form() {
    let rows = [
        "+12|012|-0|+5|0005|-5|-0042|+3.50|a.tif".to_string(),
        "13|0|00|1|1|0|+9223372036854775807|0.5|a.tif".to_string(),
        "-7|1|2|3|4|-0|-9223372036854775808|1|a.tif".to_string(),
    ];
    let text = lst(&INTEGERS, &rows);
    let expected: Vec<Vec<String>> = [
        // Doubles and strings stay as written; only integers are rewritten.
        ["12", "12", "0", "5", "5", "-5", "-42", "+3.50", "a.tif"],
        [
            "13",
            "0",
            "0",
            "1",
            "1",
            "0",
            "9223372036854775807",
            "0.5",
            "a.tif",
        ],
        [
            "-7",
            "1",
            "2",
            "3",
            "4",
            "0",
            "-9223372036854775808",
            "1",
            "a.tif",
        ],
    ]
    .iter()
    .map(|r| r.iter().map(|v| v.to_string()).collect())
    .collect();
    let list = parse_ok(&text);
    assert_eq!(list.rows, expected);

    // ReadMetadata's streaming path writes the same canonical values to metadata.csv.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("integers.lst");
    std::fs::write(&path, &text).unwrap();
    let (header, csv) = read_to_csv(&path).unwrap();
    assert_eq!(header.particles, 3);
    assert_eq!(csv, list.to_csv().unwrap());
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "id,image_x,image_y,image_w,image_h,src_x,big,area,collage_file",
            "12,12,0,5,5,-5,-42,+3.50,a.tif",
            "13,0,0,1,1,0,9223372036854775807,0.5,a.tif",
            "-7,1,2,3,4,0,-9223372036854775808,1,a.tif",
        ]
    );

    // Rewriting is no way round the limits: a size of -0 or +00 is still too small.
    let e = parse_err(&with_bad_second_row(&typed_row("2", &[("image_w", "-0")])));
    assert_one_problem(&e, Some(13), Some("image_w"), &["-0 must be at least 1"]);
    let e = parse_err(&with_bad_second_row(&typed_row("2", &[("image_h", "+00")])));
    assert_one_problem(&e, Some(13), Some("image_h"), &["+00 must be at least 1"]);
}

#[test]
fn a_minus_zero_position_decollages_at_zero() {
    use flowcam_pipeline::TOOL_VERSION;
    use flowcam_pipeline::engine::{Runner, TaskRef};
    use flowcam_pipeline::tasks::{DecollageOptions, FlowCamPipeline, Session};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("minus_zero");
    std::fs::create_dir(&input).unwrap();
    // A 6 x 4 grey page whose pixel (x, y) is 10 * y + x.
    let page: Vec<u8> = (0..4u8)
        .flat_map(|y| (0..6u8).map(move |x| 10 * y + x))
        .collect();
    let file = std::fs::File::create(input.join("page.tif")).unwrap();
    tiff::encoder::TiffEncoder::new(file)
        .unwrap()
        .write_image::<tiff::encoder::colortype::Gray8>(6, 4, &page)
        .unwrap();
    let rows = [
        "-0|-0|+0|2|3|page.tif".to_string(),
        "+7|+3|01|3|2|page.tif".to_string(),
    ];
    std::fs::write(input.join("minus_zero.lst"), lst(&MINIMAL, &rows)).unwrap();

    let session = Arc::new(Session::new(&input, &dir.path().join("out"), None).unwrap());
    let root: TaskRef = Arc::new(FlowCamPipeline::new(
        session.clone(),
        DecollageOptions::default(),
        None,
    ));
    let report = Runner::new(TOOL_VERSION, 1).run(&root).unwrap();
    assert!(report.succeeded(), "{}", report.summary());

    let csv = std::fs::read_to_string(session.metadata_csv()).unwrap();
    let csv: Vec<&str> = csv.lines().collect();
    assert_eq!(csv[1..], ["0,0,0,2,3,page.tif", "7,3,1,3,2,page.tif"]);
    let manifest = std::fs::read_to_string(session.manifest()).unwrap();
    let particles: Vec<&str> = manifest
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(particles, ["0", "7"]);
    for (id, (x, y, w, h)) in [("0", (0, 0, 2, 3)), ("7", (3, 1, 3, 2))] {
        let path = session
            .vignettes_dir()
            .join("page.tif")
            .join(format!("minus_zero_{id}.tif"));
        let mut decoder = tiff::decoder::Decoder::new(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(decoder.dimensions().unwrap(), (w, h));
        let tiff::decoder::DecodingResult::U8(pixels) = decoder.read_image().unwrap() else {
            panic!("not 8-bit");
        };
        let page = &page;
        let crop: Vec<u8> = (y..y + h)
            .flat_map(|row| (x..x + w).map(move |col| page[(row * 6 + col) as usize]))
            .collect();
        assert_eq!(pixels, crop, "particle {id}");
    }
}

#[test]
fn one_row_can_have_several_problems() {
    let row = typed_row(
        "2",
        &[
            ("image_x", "-1"),
            ("area", "x"),
            ("collage_file", "../a.tif"),
        ],
    );
    let e = parse_err(&with_bad_second_row(&row));
    let fields: Vec<(Option<usize>, Option<&str>)> = e
        .problems
        .iter()
        .map(|p| (p.line, p.field.as_deref()))
        .collect();
    assert_eq!(
        fields,
        [
            (Some(13), Some("area")),
            (Some(13), Some("image_x")),
            (Some(13), Some("collage_file")),
        ]
    );
}

// --- Bad headers ----------------------------------------------------------------------

#[test]
fn missing_or_unsupported_version_line() {
    let body = lst(&MINIMAL, &["1|0|0|5|5|a.tif".into()]);
    let without_version = body.strip_prefix("017\n").unwrap().to_string();
    let cases = [
        (without_version.clone(), "\"num-fields|6\""),
        (
            format!("VisualSpreadsheet\n{without_version}"),
            "\"VisualSpreadsheet\"",
        ),
        (body.replacen("017", "v17", 1), "\"v17\""),
        (format!("\n{without_version}"), "\"\""),
        (String::new(), "\"\""),
        ("\r\n\r\n".to_string(), "\"\""),
    ];
    for (text, found) in &cases {
        let e = parse_err(text);
        assert_one_problem(&e, Some(1), None, &["format version", found]);
    }
}

#[test]
fn missing_num_fields_line() {
    let mut declarations = String::new();
    for (name, ty) in MINIMAL {
        declarations.push_str(&format!("{name}|{ty}\n"));
    }
    for count_line in [
        "id|int32",
        "num-fields 6",
        "num-fields|",
        "num-fields|six",
        "num-fields|0",
        "num-fields|-6",
        "Num-Fields|6",
    ] {
        let text = if count_line == "id|int32" {
            format!("017\n{declarations}")
        } else {
            format!("017\n{count_line}\n{declarations}")
        };
        let e = parse_err(&text);
        let found = format!("{count_line:?}");
        assert_one_problem(&e, Some(2), None, &["num-fields|N", &found]);
    }
    let e = parse_err("017\n");
    assert_one_problem(&e, Some(2), None, &["num-fields|N"]);
}

#[test]
fn more_fields_declared_than_lines_available() {
    let text = header(&MINIMAL).replace("num-fields|6", "num-fields|8");
    let e = parse_err(&text);
    assert_one_problem(
        &e,
        None,
        None,
        &["declares 8 fields but ends after 6 field lines"],
    );
    let e = parse_err("017\nnum-fields|3\n");
    assert_one_problem(
        &e,
        None,
        None,
        &["declares 3 fields but ends after 0 field lines"],
    );
}

#[test]
fn absurd_field_counts_are_errors_not_panics() {
    for n in [
        usize::MAX.to_string(),
        (usize::MAX - 1).to_string(),
        (usize::MAX / 2).to_string(),
    ] {
        let text = header(&MINIMAL).replace("num-fields|6", &format!("num-fields|{n}"));
        let e = parse_err(&text);
        let needle = format!("declares {n} fields");
        assert_one_problem(&e, None, None, &[&needle]);
    }
    // Too large for usize at all: reported as a bad count line.
    let text = header(&MINIMAL).replace("num-fields|6", "num-fields|99999999999999999999999");
    assert_one_problem(&parse_err(&text), Some(2), None, &["num-fields|N"]);
}

#[test]
fn unknown_field_types() {
    for ty in ["int128", "Int32", "", "bool"] {
        let mut fields = MINIMAL.to_vec();
        fields.insert(3, ("mystery", ty));
        let e = parse_err(&lst(&fields, &["1|0|0|x|5|5|a.tif".into()]));
        let quoted = format!("{ty:?}");
        assert_one_problem(
            &e,
            Some(6),
            Some("mystery"),
            &["unsupported field type", &quoted],
        );
    }
}

#[test]
fn declarations_without_a_type() {
    let text = header(&MINIMAL).replace("image_y|int32", "image_y int32");
    let e = parse_err(&text);
    assert_one_problem(&e, Some(5), None, &["name|type", "\"image_y int32\""]);
}

#[test]
fn every_required_field_must_be_declared() {
    for missing in REQUIRED_FIELDS {
        let fields: Vec<(&str, &str)> = TYPED
            .iter()
            .copied()
            .filter(|(n, _)| *n != missing)
            .collect();
        let e = parse_err(&header(&fields));
        assert_one_problem(&e, None, Some(missing), &["required field is not declared"]);
    }
    // Without any declarations the six are all reported, in order.
    let fields = [("area", "double")];
    let e = parse_err(&header(&fields));
    let named: Vec<&str> = e
        .problems
        .iter()
        .map(|p| p.field.as_deref().unwrap())
        .collect();
    assert_eq!(named, REQUIRED_FIELDS);
}

#[test]
fn repeated_field_names() {
    let mut fields = TYPED.to_vec();
    fields.push(("area", "int32"));
    let e = parse_err(&header(&fields));
    // The repeat is the 10th declaration, line 12.
    assert_one_problem(&e, Some(12), None, &["repeated field name \"area\""]);
    let mut fields = TYPED.to_vec();
    fields.insert(2, ("id", "int32"));
    let e = parse_err(&header(&fields));
    assert_one_problem(&e, Some(5), None, &["repeated field name \"id\""]);
    let mut fields = TYPED.to_vec();
    fields.push(("", "double"));
    let e = parse_err(&header(&fields));
    assert_one_problem(&e, Some(12), None, &["empty or repeated field name \"\""]);
}

#[test]
fn required_fields_must_have_the_right_type() {
    for (name, ty, expected) in [
        ("id", "double", "expected an integer type"),
        ("id", "string", "expected an integer type"),
        ("image_x", "float", "expected an integer type"),
        ("image_h", "timestamp", "expected an integer type"),
        ("collage_file", "int32", "expected string"),
        ("collage_file", "guid", "expected string"),
    ] {
        let fields: Vec<(&str, &str)> = TYPED
            .iter()
            .map(|&(n, t)| if n == name { (n, ty) } else { (n, t) })
            .collect();
        let e = parse_err(&header(&fields));
        let declared = format!("declared as {ty}");
        assert_one_problem(&e, None, Some(name), &[&declared, expected]);
    }
}

// --- Reporting ------------------------------------------------------------------------

#[test]
fn many_errors_are_summarised() {
    let rows: Vec<String> = (0..30)
        .map(|i| {
            let id = (i + 1).to_string();
            // Rows 0, 6, 12, 18, 24 are good; the other 25 have a zero width.
            if i % 6 == 0 {
                typed_row(&id, &[])
            } else {
                typed_row(&id, &[("image_w", "0")])
            }
        })
        .collect();
    let e = parse_err(&lst(&TYPED, &rows));
    assert_eq!(e.problems.len(), 10);
    assert_eq!(e.more, 15);
    let lines: Vec<Option<usize>> = e.problems.iter().map(|p| p.line).collect();
    let expected: Vec<Option<usize>> = (0..30)
        .filter(|i| i % 6 != 0)
        .take(10)
        .map(|i| Some(12 + i))
        .collect();
    assert_eq!(lines, expected);
    let shown = e.to_string();
    assert_eq!(shown.lines().count(), 11, "{shown}");
    assert!(shown.ends_with("and 15 more problems"), "{shown}");
    assert!(
        shown.starts_with(&format!("{PATH}:13: field image_w: 0 must be at least 1\n")),
        "{shown}"
    );
}

#[test]
fn exactly_ten_problems_have_no_summary() {
    let rows: Vec<String> = (0..10)
        .map(|i| typed_row(&(i + 1).to_string(), &[("area", "?")]))
        .collect();
    let e = parse_err(&lst(&TYPED, &rows));
    assert_eq!((e.problems.len(), e.more), (10, 0));
    assert!(!e.to_string().contains("more"));
}

#[test]
fn display_names_path_line_and_field() {
    let e = parse_err(&with_bad_second_row(&typed_row("2", &[("image_y", "-3")])));
    assert_eq!(
        e.to_string(),
        format!("{PATH}:13: field image_y: -3 must be at least 0")
    );
    let e = parse_err(&with_bad_second_row("2|3"));
    assert_eq!(
        e.to_string(),
        format!("{PATH}:13: expected 9 fields, found 2")
    );
    let e = parse_err(&header(&MINIMAL[1..]));
    assert_eq!(
        e.to_string(),
        format!("{PATH}: field id: required field is not declared")
    );
    let as_error: &dyn std::error::Error = &e;
    assert!(as_error.to_string().contains(PATH));
    let through_anyhow = anyhow::Error::new(e.clone());
    assert_eq!(through_anyhow.to_string(), e.to_string());
}

// --- Encoding -------------------------------------------------------------------------

#[test]
fn latin1_string_values_are_accepted() {
    let fields = [
        ("id", "int32"),
        ("image_x", "int32"),
        ("image_y", "int32"),
        ("image_w", "int32"),
        ("image_h", "int32"),
        ("sample", "string"),
        ("collage_file", "string"),
    ];
    let mut bytes = header(&fields).into_bytes();
    // "Probe été, 5 µm" and "Küste" in Windows-1252/Latin-1: not valid UTF-8.
    bytes.extend_from_slice(b"1|0|0|5|5|Probe \xe9t\xe9, 5 \xb5m|a.tif\r\n");
    bytes.extend_from_slice(b"2|0|0|5|5|K\xfcste|\xe9chantillon.tif\r\n");
    assert!(std::str::from_utf8(&bytes).is_err());
    let list = ParticleList::parse(Path::new(PATH), &bytes).unwrap();
    assert_eq!(value(&list, 0, "sample"), "Probe \u{e9}t\u{e9}, 5 \u{b5}m");
    assert_eq!(value(&list, 1, "sample"), "K\u{fc}ste");
    assert_eq!(value(&list, 1, "collage_file"), "\u{e9}chantillon.tif");
    let csv = String::from_utf8(list.to_csv().unwrap()).unwrap();
    assert!(csv.contains("K\u{fc}ste"), "{csv}");

    // The same file read from disk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.lst");
    std::fs::write(&path, &bytes).unwrap();
    let read = ParticleList::read(&path).unwrap();
    assert_eq!(read.rows, list.rows);

    // Valid UTF-8 is read as UTF-8, not as Latin-1.
    let utf8 = lst(&fields, &["1|0|0|5|5|K\u{fc}ste|a.tif".into()]);
    let list = parse_ok(&utf8);
    assert_eq!(value(&list, 0, "sample"), "K\u{fc}ste");
}

// --- Timestamps -----------------------------------------------------------------------

#[test]
fn parse_timestamp_accepts_both_separators_and_keeps_the_fraction() {
    let date = chrono::NaiveDate::from_ymd_opt(2023, 12, 20).unwrap();
    let expected = date.and_hms_opt(14, 3, 18).unwrap();

    let t = parse_timestamp("2023-12-20T14:03:18.057").unwrap();
    assert_eq!(t.date_time, expected);
    assert_eq!(t.fraction, Some("057"));

    let t = parse_timestamp("2023-12-20 14:03:18").unwrap();
    assert_eq!(t.date_time, expected);
    assert_eq!(t.fraction, None);

    let t = parse_timestamp("2023-12-20 14:03:18.5").unwrap();
    assert_eq!(t.date_time, expected);
    assert_eq!(t.fraction, Some("5"));

    let t = parse_timestamp("2024-02-29T00:00:00").unwrap();
    assert_eq!(
        t.date_time,
        chrono::NaiveDate::from_ymd_opt(2024, 2, 29)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
    );
}

#[test]
fn parse_timestamp_rejects_malformed_values() {
    for bad in [
        "2023-13-01T00:00:00",
        "2023-12-20T14:03:18.",
        "2023-12-20T14:03:18.-5",
        "2023-12-20T14:03:18.0.5",
        "2023-12-20T14:03",
        "2023-12-20",
        "2023-02-29T00:00:00",
        "2023-12-20T14:03:18+01:00",
        "2023-12-20X14:03:18",
        "",
    ] {
        assert!(parse_timestamp(bad).is_none(), "{bad:?} was accepted");
    }
}

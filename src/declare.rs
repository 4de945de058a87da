//! Task declarations: `tasks/<Task>.json`, one per task, embedded in the binary (each
//! task's registry entry holds its file).
//!
//! A declaration names the task's parameters (type, range or allowed values, default,
//! description), its inputs (name, file pattern, how many) and its outputs. It is the one
//! place a parameter is declared: the operation bridge validates requests against it,
//! `describe` prints it, and a test checks that the command line's flags and the
//! configuration file's keys match it, so the three cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub task: String,
    pub description: String,
    pub parameters: Vec<Parameter>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    Boolean,
    Integer,
    Number,
    String,
    Enum,
    Array,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// Also the long command-line flag (`--<name>`, or `--no-<name>` for a boolean that
    /// defaults to true) and the configuration file key.
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParameterType,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Kept as written (`1`, not `1.0`) so that `describe` prints what the file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<serde_json::Number>,
    /// For `enum`: the allowed values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// For `array`: the type of the elements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ParameterType>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Whether the configuration file may set it (false for per-run requests such as
    /// `verify-remote`).
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub config: bool,
}

fn yes() -> bool {
    true
}

/// A declared input or output: a name, a file pattern and how many files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    /// `*` matches any run of characters within a file or folder name; a pattern with
    /// folders (`vignettes/*/*.tif`) names files relative to the output folder.
    pub pattern: String,
    /// `1`, `?` (0 or 1), `1+` or `0+`.
    pub count: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Port {
    /// Whether `n` files are allowed.
    pub fn allows(&self, n: usize) -> bool {
        match self.count.as_str() {
            "1" => n == 1,
            "?" => n <= 1,
            "1+" => n >= 1,
            _ => true,
        }
    }

    fn count_text(&self) -> &'static str {
        match self.count.as_str() {
            "1" => "exactly 1 file",
            "?" => "at most 1 file",
            "1+" => "at least 1 file",
            _ => "any number of files",
        }
    }
}

/// A declaration from its file's text. The declarations are part of the program, so a
/// broken one is a bug (and a test parses them all).
pub fn parse(task: &str, text: &str) -> Declaration {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("tasks/{task}.json is not a valid declaration: {e}"))
}

/// Every task's declaration, in pipeline order (from [`crate::tasks::registry`]).
pub fn all() -> Vec<Declaration> {
    crate::tasks::registry::TASKS
        .iter()
        .map(|t| t.declaration())
        .collect()
}

pub fn find(task: &str) -> Option<Declaration> {
    crate::tasks::registry::find(task).map(|t| t.declaration())
}

/// `*` globbing on one file name.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

impl Declaration {
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// A parameter's value: the request's, else its default.
    pub fn value<'a>(&'a self, given: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
        given
            .get(name)
            .or_else(|| self.parameter(name).and_then(|p| p.default.as_ref()))
    }

    /// Every problem with a request's parameters and inputs, each naming the parameter or
    /// input and the rule it breaks. Empty when the request is valid.
    pub fn validate(
        &self,
        parameters: &Map<String, Value>,
        inputs: &Map<String, Value>,
    ) -> Vec<String> {
        let mut problems = self.validate_parameters(parameters);
        problems.extend(self.validate_inputs(inputs));
        problems
    }

    /// Every problem with a request's parameters: undeclared, of the wrong type or out of
    /// bounds, or required and missing.
    pub fn validate_parameters(&self, parameters: &Map<String, Value>) -> Vec<String> {
        let mut problems = Vec::new();
        let declared: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
        for (name, value) in parameters {
            match self.parameter(name) {
                None => problems.push(format!(
                    "parameter `{name}` is not declared for {} (declared: {})",
                    self.task,
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                )),
                Some(p) => problems.extend(p.check(value)),
            }
        }
        for p in self.parameters.iter().filter(|p| p.required) {
            if !parameters.contains_key(&p.name) {
                problems.push(format!(
                    "parameter `{}` is required: {}",
                    p.name, p.description
                ));
            }
        }
        problems
    }

    /// Every problem with a request's inputs: undeclared, miscounted, misnamed, unreadable.
    fn validate_inputs(&self, inputs: &Map<String, Value>) -> Vec<String> {
        let mut problems = Vec::new();
        let ports: Vec<&str> = self.inputs.iter().map(|p| p.name.as_str()).collect();
        for name in inputs.keys() {
            if !ports.contains(&name.as_str()) {
                problems.push(format!(
                    "input `{name}` is not declared for {} (declared: {})",
                    self.task,
                    ports.join(", ")
                ));
            }
        }
        for port in &self.inputs {
            let files = match inputs.get(&port.name) {
                None => Vec::new(),
                Some(Value::Array(items)) => {
                    let mut files = Vec::new();
                    for item in items {
                        match item.as_str() {
                            Some(path) => files.push(path),
                            None => problems.push(format!(
                                "input `{}`: each entry must be a path (a string), got {item}",
                                port.name
                            )),
                        }
                    }
                    files
                }
                Some(other) => {
                    problems.push(format!(
                        "input `{}` must be a list of paths, got {other}",
                        port.name
                    ));
                    continue;
                }
            };
            if !port.allows(files.len()) {
                problems.push(format!(
                    "input `{}` takes {} ({}), got {}",
                    port.name,
                    port.count_text(),
                    port.pattern,
                    files.len()
                ));
            }
            for file in files {
                let path = Path::new(file);
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let pattern = port.pattern.rsplit('/').next().unwrap_or(&port.pattern);
                if !name.as_deref().is_some_and(|n| matches(pattern, n)) {
                    problems.push(format!(
                        "input `{}`: {file} does not match {}",
                        port.name, port.pattern
                    ));
                } else if let Err(e) = std::fs::File::open(path) {
                    problems.push(format!("input `{}`: {file}: {e}", port.name));
                } else if !path.is_file() {
                    problems.push(format!("input `{}`: {file} is not a file", port.name));
                }
            }
        }
        problems
    }
}

impl Parameter {
    /// The lower bound as a number.
    pub fn min(&self) -> Option<f64> {
        self.minimum.as_ref().and_then(serde_json::Number::as_f64)
    }

    /// The upper bound as a number.
    pub fn max(&self) -> Option<f64> {
        self.maximum.as_ref().and_then(serde_json::Number::as_f64)
    }

    /// Problems with one value of this parameter.
    fn check(&self, value: &Value) -> Vec<String> {
        let name = &self.name;
        let kind = |ty: ParameterType| match ty {
            ParameterType::Boolean => "a boolean (true or false)",
            ParameterType::Integer => "an integer",
            ParameterType::Number => "a number",
            ParameterType::String => "a string",
            ParameterType::Enum => "one of the allowed strings",
            ParameterType::Array => "an array",
        };
        let type_ok = |ty: ParameterType, v: &Value| match ty {
            ParameterType::Boolean => v.is_boolean(),
            ParameterType::Integer => v.is_i64() || v.is_u64(),
            ParameterType::Number => v.is_number(),
            ParameterType::String | ParameterType::Enum => v.is_string(),
            ParameterType::Array => v.is_array(),
        };
        if !type_ok(self.ty, value) {
            return vec![format!(
                "parameter `{name}` must be {}, got {value}",
                kind(self.ty)
            )];
        }
        let mut problems = Vec::new();
        if let Some(x) = value.as_f64() {
            let bound = |b: &Option<serde_json::Number>| b.as_ref().and_then(|n| n.as_f64());
            let below = bound(&self.minimum).is_some_and(|m| x < m);
            let above = bound(&self.maximum).is_some_and(|m| x > m);
            if below || above {
                let range = match (&self.minimum, &self.maximum) {
                    (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                    (Some(lo), None) => format!("at least {lo}"),
                    (None, Some(hi)) => format!("at most {hi}"),
                    (None, None) => String::new(),
                };
                problems.push(format!("parameter `{name}` must be {range}, got {value}"));
            }
        }
        if let (ParameterType::Enum, Some(values), Some(s)) =
            (self.ty, &self.values, value.as_str())
            && !values.iter().any(|v| v == s)
        {
            problems.push(format!(
                "parameter `{name}` must be one of {}, got {value}",
                values.join(", ")
            ));
        }
        if let (ParameterType::Array, Some(items), Some(elements)) =
            (self.ty, self.items, value.as_array())
        {
            for element in elements.iter().filter(|e| !type_ok(items, e)) {
                problems.push(format!(
                    "parameter `{name}`: every element must be {}, got {element}",
                    kind(items)
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn every_declaration_parses_and_is_named_after_its_file() {
        let all = all();
        let tasks = crate::tasks::registry::TASKS;
        assert_eq!(all.len(), tasks.len());
        for (declaration, name) in all.iter().zip(tasks.iter().map(|t| t.name)) {
            assert_eq!(declaration.task, name);
            for p in &declaration.parameters {
                if let Some(default) = &p.default {
                    assert!(
                        p.check(default).is_empty(),
                        "{name}.{}: bad default",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn globbing() {
        assert!(matches("*.lst", "a.lst"));
        assert!(matches("ledger-*.tsv", "ledger-0123.tsv"));
        assert!(!matches("*.lst", "a.lst.bak"));
        assert!(matches("metadata.csv", "metadata.csv"));
        assert!(!matches("metadata.csv", "metadata.tsv"));
    }

    #[test]
    fn every_rule_is_named_and_all_problems_are_told_at_once() {
        let upload = find("UploadToS3").unwrap();
        let problems = upload.validate(
            &object(json!({
                "api-batch-size": 0,
                "upload-concurrency": "many",
                "create-bucket": "yes",
                "colour": "blue"
            })),
            &object(
                json!({"manifest": ["/nonexistent/manifest.csv", "/x/manifest.csv"], "extra": []}),
            ),
        );
        let text = problems.join("\n");
        for expected in [
            "parameter `api-batch-size` must be between 1 and 999, got 0",
            "parameter `upload-concurrency` must be an integer, got \"many\"",
            "parameter `create-bucket` must be a boolean (true or false), got \"yes\"",
            "parameter `colour` is not declared for UploadToS3",
            "parameter `s3-bucket` is required",
            "input `extra` is not declared for UploadToS3",
            "input `manifest` takes exactly 1 file (manifest.csv), got 2",
            "input `manifest`: /nonexistent/manifest.csv:",
            "input `metadata` takes exactly 1 file (metadata.csv), got 0",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn enums_arrays_and_numbers() {
        let p = Parameter {
            name: "mode".into(),
            ty: ParameterType::Enum,
            description: String::new(),
            default: None,
            minimum: None,
            maximum: None,
            values: Some(vec!["a".into(), "b".into()]),
            items: None,
            required: false,
            config: true,
        };
        assert!(p.check(&json!("a")).is_empty());
        assert_eq!(
            p.check(&json!("c")),
            vec!["parameter `mode` must be one of a, b, got \"c\""]
        );
        let list = Parameter {
            name: "ids".into(),
            ty: ParameterType::Array,
            items: Some(ParameterType::Integer),
            values: None,
            ..p.clone()
        };
        assert!(list.check(&json!([1, 2])).is_empty());
        assert_eq!(
            list.check(&json!([1, "x"])),
            vec!["parameter `ids`: every element must be an integer, got \"x\""]
        );
        let ratio = Parameter {
            name: "ratio".into(),
            ty: ParameterType::Number,
            minimum: Some(0.into()),
            maximum: Some(1.into()),
            items: None,
            ..p
        };
        assert!(ratio.check(&json!(0.5)).is_empty());
        assert_eq!(
            ratio.check(&json!(1.5)),
            vec!["parameter `ratio` must be between 0 and 1, got 1.5"]
        );
    }
}

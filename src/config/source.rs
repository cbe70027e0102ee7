//! Where a config comes from (a file or the embedded default) and its reading into the raw
//! structs: TOML syntax, wrong types and unknown keys, each reported with its key and line.
//! Validation of the values happens afterwards, in the sections' own modules.

use std::path::{Path, PathBuf};

use super::problem::{problem, ConfigError, ConfigProblem};
use super::raw::RawConfig;

/// The embedded default: the checked-in `config.toml`, so `authgate serve` runs without a file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config.toml");

/// Where a config came from: relative paths inside it resolve against `base_dir`.
pub struct ConfigSource {
    pub name: String,
    pub text: String,
    pub base_dir: PathBuf,
    pub embedded: bool,
}

impl ConfigSource {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            problems: vec![problem(
                "(file)",
                format!("cannot read {}: {e}", path.display()),
                "pass an existing, readable file with --config or AUTHGATE_CONFIG",
            )],
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(Self {
            name: path.display().to_string(),
            text,
            base_dir,
            embedded: false,
        })
    }

    /// The embedded default, resolving relative paths against the working directory.
    pub fn embedded_default() -> Self {
        Self {
            name: "<embedded default config>".into(),
            text: EMBEDDED_DEFAULT.into(),
            base_dir: PathBuf::from("."),
            embedded: true,
        }
    }
}

/// Reads `source` into the raw structs. `Err` when nothing can be read (bad syntax, or too many
/// wrong types); otherwise the raw config and the problems met on the way.
pub(super) fn read_raw(
    source: &ConfigSource,
) -> Result<(RawConfig, Vec<ConfigProblem>), ConfigError> {
    let fail = |problems| ConfigError {
        source_name: source.name.clone(),
        problems,
    };
    const TYPE_FIX: &str =
        "correct the value's type (durations are strings like \"5s\", sizes are integers)";
    if let Err(e) = source.text.parse::<toml::Table>() {
        let key = locate_toml_error(&source.text, e.span());
        return Err(fail(vec![problem(
            &key,
            e.message().to_string(),
            "correct the TOML syntax",
        )]));
    }
    // serde stops at the first wrong type: each one is reported, its line blanked out (line
    // numbers stay), and the rest read again, so one run lists every problem.
    let mut text = source.text.clone();
    let mut problems = Vec::new();
    let (raw, unknown) = loop {
        let mut unknown = Vec::new();
        let de = toml::Deserializer::new(&text);
        match serde_ignored::deserialize::<_, _, RawConfig>(de, |path| {
            unknown.push(toml_key(&path))
        }) {
            Ok(raw) => break (raw, unknown),
            Err(e) => {
                let key = locate_toml_error(&text, e.span());
                problems.push(problem(&key, e.message().to_string(), TYPE_FIX));
                match e.span() {
                    Some(span) if problems.len() < 100 => blank_lines(&mut text, span),
                    _ => return Err(fail(problems)),
                }
            }
        }
    };
    problems.extend(unknown.into_iter().map(|k| {
        problem(
            &k,
            "unknown key",
            "remove it or correct its spelling; config.toml lists every key",
        )
    }));
    Ok((raw, problems))
}

/// Replaces the lines a span touches with spaces, keeping every newline.
fn blank_lines(text: &mut String, span: std::ops::Range<usize>) {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { c } else { ' ' })
        .collect();
    text.replace_range(start..end, &blanked);
}

/// A dotted TOML key (`server.listen`, `routes.public[0]`) from serde_ignored's path.
fn toml_key(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", toml_key(parent)),
        Path::Map { parent, key } => {
            let p = toml_key(parent);
            if p.is_empty() {
                key.to_string()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => toml_key(parent),
    }
}

/// Names the key around a TOML syntax or type error, from its span.
fn locate_toml_error(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "(file)".into();
    };
    let upto = &text[..span.start.min(text.len())];
    let line_no = upto.matches('\n').count() + 1;
    let mut table = String::new();
    for line in upto.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    match (table.is_empty(), key.is_empty() || key.starts_with('[')) {
        (_, true) if !table.is_empty() => format!("{table} (line {line_no})"),
        (true, false) => format!("{key} (line {line_no})"),
        (false, false) => format!("{table}.{key} (line {line_no})"),
        _ => format!("(line {line_no})"),
    }
}

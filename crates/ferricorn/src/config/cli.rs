//! Command-line parsing driven by the settings table, with argparse's rules
//! (what gunicorn uses): `-w 2`, `-w2`, `--workers 2`, `--workers=2`, unique
//! prefixes of long options, repeatable `append` flags, positional app spec.
//!
//! gunicorn counterpart: `Config.parser()` / `Setting.add_option`.

use super::table::{Action, ROWS, Setting};
use super::{ConfigError, Value, parse_cli_value};

/// What the command line asked for, before it is merged into `Settings`.
#[derive(Debug, Default)]
pub struct Parsed {
    /// (setting, value) in the order given; `append` rows are already merged into one list.
    pub values: Vec<(&'static Setting, Value)>,
    pub positional: Vec<String>,
    pub help: bool,
    pub version: bool,
}

enum Flag {
    Help,
    Version,
    Setting(&'static Setting),
}

fn lookup_long(name: &str) -> Result<(Flag, &'static str), ConfigError> {
    let mut exact = None;
    let mut prefixed: Vec<(&'static Setting, &'static str)> = Vec::new();
    for row in ROWS {
        for flag in row.flags.iter().filter(|f| f.starts_with("--")) {
            if *flag == name {
                exact = Some((Flag::Setting(row), *flag));
            } else if flag.starts_with(name) {
                prefixed.push((row, flag));
            }
        }
    }
    for (special, flag) in [(Flag::Help, "--help"), (Flag::Version, "--version")] {
        if flag == name {
            return Ok((special, flag));
        }
        if flag.starts_with(name) {
            if prefixed.is_empty() && exact.is_none() {
                return Ok((special, flag));
            }
            return Err(ConfigError::Usage(format!("ambiguous option: {name}")));
        }
    }
    if let Some(found) = exact {
        return Ok(found);
    }
    match prefixed.as_slice() {
        [(row, flag)] => Ok((Flag::Setting(row), flag)),
        [] => Err(ConfigError::Usage(format!(
            "unrecognized arguments: {name}"
        ))),
        many => {
            let names: Vec<&str> = many.iter().map(|(_, f)| *f).collect();
            Err(ConfigError::Usage(format!(
                "ambiguous option: {name} could match {}",
                names.join(", ")
            )))
        }
    }
}

fn lookup_short(c: char) -> Option<(Flag, String)> {
    match c {
        'h' => return Some((Flag::Help, "-h".into())),
        'v' => return Some((Flag::Version, "-v".into())),
        _ => {}
    }
    let flag = format!("-{c}");
    ROWS.iter()
        .find(|r| r.flags.contains(&flag.as_str()))
        .map(|r| (Flag::Setting(r), flag))
}

fn takes_value(row: &Setting) -> bool {
    matches!(row.action, Action::Store | Action::Append)
}

/// Parse argv (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, ConfigError> {
    let mut parsed = Parsed::default();
    let mut appended: Vec<(&'static Setting, Vec<String>)> = Vec::new();
    let mut i = 0;
    let mut only_positional = false;

    let mut record = |parsed: &mut Parsed,
                      row: &'static Setting,
                      flag: &str,
                      raw: Option<String>| {
        let label = format!("argument {}", flag_label(row));
        match row.action {
            Action::StoreTrue => parsed.values.push((row, Value::Bool(true))),
            Action::StoreFalse => parsed.values.push((row, Value::Bool(false))),
            Action::Store => {
                let raw = raw
                    .ok_or_else(|| ConfigError::Usage(format!("{label}: expected one argument")))?;
                let value = parse_cli_value(row, &raw)?;
                parsed.values.push((row, value));
            }
            Action::Append => {
                let raw = raw
                    .ok_or_else(|| ConfigError::Usage(format!("{label}: expected one argument")))?;
                // Validate each item as the row's kind would.
                parse_cli_value(row, &raw)?;
                match appended.iter_mut().find(|(r, _)| r.name == row.name) {
                    Some((_, list)) => list.push(raw),
                    None => appended.push((row, vec![raw])),
                }
            }
        }
        let _ = flag;
        Ok::<(), ConfigError>(())
    };

    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || arg == "-" || !arg.starts_with('-') {
            parsed.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let (flag, canonical) = lookup_long(&name)?;
            match flag {
                Flag::Help => parsed.help = true,
                Flag::Version => parsed.version = true,
                Flag::Setting(row) => {
                    let raw = if takes_value(row) {
                        match inline {
                            Some(v) => Some(v),
                            None => next_value(args, &mut i),
                        }
                    } else {
                        if inline.is_some() {
                            return Err(ConfigError::Usage(format!(
                                "argument {}: ignored explicit argument {:?}",
                                flag_label(row),
                                inline.unwrap_or_default()
                            )));
                        }
                        None
                    };
                    record(&mut parsed, row, canonical, raw)?;
                }
            }
            continue;
        }
        // Short options, possibly clustered (`-Dw2`) or with attached value (`-w2`).
        for (pos, c) in arg[1..].char_indices() {
            let (flag, text) = lookup_short(c)
                .ok_or_else(|| ConfigError::Usage(format!("unrecognized arguments: {arg}")))?;
            match flag {
                Flag::Help => parsed.help = true,
                Flag::Version => parsed.version = true,
                Flag::Setting(row) => {
                    if takes_value(row) {
                        let rest = &arg[1 + pos + c.len_utf8()..];
                        let raw = if rest.is_empty() {
                            next_value(args, &mut i)
                        } else {
                            Some(rest.strip_prefix('=').unwrap_or(rest).to_string())
                        };
                        record(&mut parsed, row, &text, raw)?;
                        break;
                    }
                    record(&mut parsed, row, &text, None)?;
                }
            }
        }
    }
    for (row, list) in appended {
        parsed.values.push((row, Value::List(list)));
    }
    Ok(parsed)
}

/// The next argv item as an option's value, unless it looks like an option itself.
fn next_value(args: &[String], i: &mut usize) -> Option<String> {
    let v = args.get(*i)?;
    if v.starts_with('-') && v.len() > 1 && !v[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    *i += 1;
    Some(v.clone())
}

/// argparse's label for an option in messages: `-w/--workers`.
pub fn flag_label(row: &Setting) -> String {
    row.flags.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn value_of<'a>(p: &'a Parsed, name: &str) -> Option<&'a Value> {
        p.values
            .iter()
            .rev()
            .find(|(r, _)| r.name == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn long_short_and_attached_forms() {
        for line in [
            "-w 3 app:app",
            "-w3 app:app",
            "--workers 3 app:app",
            "--workers=3 app:app",
        ] {
            let p = parse(&args(line)).unwrap();
            assert_eq!(value_of(&p, "workers"), Some(&Value::Int(3)), "{line}");
            assert_eq!(p.positional, vec!["app:app"], "{line}");
        }
    }

    #[test]
    fn unique_prefix_of_a_long_flag() {
        let p = parse(&args("--graceful 5 app")).unwrap();
        assert_eq!(value_of(&p, "graceful_timeout"), Some(&Value::Int(5)));
    }

    #[test]
    fn append_collects_every_bind() {
        let p = parse(&args("-b 127.0.0.1:1 --bind unix:/tmp/x -b=[::1]:3 app")).unwrap();
        assert_eq!(
            value_of(&p, "bind"),
            Some(&Value::List(vec![
                "127.0.0.1:1".into(),
                "unix:/tmp/x".into(),
                "[::1]:3".into()
            ]))
        );
    }

    #[test]
    fn ambiguous_and_unknown_are_errors() {
        let err = parse(&args("--worker 2")).unwrap_err().to_string();
        assert!(err.contains("ambiguous"), "{err}");
        let err = parse(&args("--no-such-flag")).unwrap_err().to_string();
        assert!(
            err.contains("unrecognized arguments: --no-such-flag"),
            "{err}"
        );
    }

    #[test]
    fn invalid_int_names_the_setting() {
        let err = parse(&args("-w many")).unwrap_err().to_string();
        assert!(err.contains("workers") && err.contains("many"), "{err}");
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = parse(&args("app -w")).unwrap_err().to_string();
        assert!(err.contains("expected one argument"), "{err}");
    }

    #[test]
    fn store_true_and_help_version() {
        let p = parse(&args("--preload -h --version")).unwrap();
        assert_eq!(value_of(&p, "preload_app"), Some(&Value::Bool(true)));
        assert!(p.help && p.version);
    }
}

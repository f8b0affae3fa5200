//! Command-line parsing driven by the settings table, with argparse's rules
//! (what gunicorn uses): `-w 2`, `-w2`, `-w=2`, `--workers 2`, `--workers=2`,
//! unique prefixes of long options, clustered short flags (`-Dw2`),
//! repeatable `append` flags, `--flag [VALUE]` options, positional app spec.
//! The same parser reads `GUNICORN_CMD_ARGS` / `FERRICORN_CMD_ARGS`.
//!
//! Invariant: text is converted by the row's `CliType` here (argparse's
//! `type=` errors are usage errors); the row's validator runs when the value
//! is applied to `Settings`.
//!
//! gunicorn counterpart: `Config.parser()` / `Setting.add_option`.

use super::ConfigError;
use super::table::{Action, ROWS, Setting};
use super::validate::{Input, convert_cli};

/// What one command line asked for, before it is merged into `Settings`.
#[derive(Debug, Default)]
pub struct Parsed {
    /// (setting, value) in the order given; `append` rows are merged into one `Input::Seq`.
    pub values: Vec<(&'static Setting, Input)>,
    pub positional: Vec<String>,
    pub help: bool,
    pub version: bool,
}

impl Parsed {
    /// The last value given for a setting.
    pub fn get(&self, name: &str) -> Option<&Input> {
        self.values
            .iter()
            .rev()
            .find(|(r, _)| r.name == name)
            .map(|(_, v)| v)
    }
}

#[derive(Clone, Copy)]
enum Flag {
    Help,
    Version,
    Setting(&'static Setting),
}

fn long_options() -> impl Iterator<Item = (&'static str, Flag)> {
    [("--help", Flag::Help), ("--version", Flag::Version)]
        .into_iter()
        .chain(ROWS.iter().flat_map(|row| {
            row.flags
                .iter()
                .filter(|f| f.starts_with("--"))
                .map(move |f| (*f, Flag::Setting(row)))
        }))
}

fn lookup_long(name: &str) -> Result<(Flag, &'static str), ConfigError> {
    let mut prefixed: Vec<(Flag, &'static str)> = Vec::new();
    for (flag, what) in long_options() {
        if flag == name {
            return Ok((what, flag));
        }
        if flag.starts_with(name) {
            prefixed.push((what, flag));
        }
    }
    match prefixed.as_slice() {
        [one] => Ok(*one),
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

fn lookup_short(c: char) -> Option<Flag> {
    match c {
        'h' => return Some(Flag::Help),
        'v' => return Some(Flag::Version),
        _ => {}
    }
    let flag = format!("-{c}");
    ROWS.iter()
        .find(|r| r.flags.contains(&flag.as_str()))
        .map(Flag::Setting)
}

/// argparse's label for an option in messages: `-w/--workers`.
pub fn flag_label(row: &Setting) -> String {
    row.flags.join("/")
}

/// Whether argv text is an option rather than a value (argparse: a leading
/// `-` that is not a negative number and not a lone `-`).
fn looks_like_option(v: &str) -> bool {
    v.starts_with('-')
        && v.len() > 1
        && !v[1..].starts_with(|c: char| c.is_ascii_digit() || c == '.')
}

struct State {
    parsed: Parsed,
    appended: Vec<(&'static Setting, Vec<Input>)>,
}

impl State {
    fn record(&mut self, row: &'static Setting, raw: Option<String>) -> Result<(), ConfigError> {
        let usage = |msg: &str| ConfigError::Usage(format!("argument {}: {msg}", flag_label(row)));
        let value = match row.action {
            Action::StoreTrue => Input::Bool(true),
            Action::StoreFalse => Input::Bool(false),
            Action::OptionalConst(c) => match raw {
                Some(raw) => convert_cli(row, &raw).map_err(|e| usage(&e))?,
                None => Input::Str(c.to_string()),
            },
            Action::Store => {
                let raw = raw.ok_or_else(|| usage("expected one argument"))?;
                convert_cli(row, &raw).map_err(|e| usage(&e))?
            }
            Action::Append => {
                let raw = raw.ok_or_else(|| usage("expected one argument"))?;
                let item = convert_cli(row, &raw).map_err(|e| usage(&e))?;
                match self.appended.iter_mut().find(|(r, _)| r.name == row.name) {
                    Some((_, list)) => list.push(item),
                    None => self.appended.push((row, vec![item])),
                }
                return Ok(());
            }
        };
        self.parsed.values.push((row, value));
        Ok(())
    }
}

/// Parse argv (without the program name).
pub fn parse(args: &[String]) -> Result<Parsed, ConfigError> {
    let mut st = State {
        parsed: Parsed::default(),
        appended: Vec::new(),
    };
    let mut i = 0;
    let mut only_positional = false;
    let next_value = |i: &mut usize| -> Option<String> {
        let v = args.get(*i)?;
        if looks_like_option(v) {
            return None;
        }
        *i += 1;
        Some(v.clone())
    };

    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if only_positional || !looks_like_option(arg) {
            st.parsed.positional.push(arg.clone());
            continue;
        }
        if arg == "--" {
            only_positional = true;
            continue;
        }
        if arg.starts_with("--") {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            match lookup_long(&name)?.0 {
                Flag::Help => st.parsed.help = true,
                Flag::Version => st.parsed.version = true,
                Flag::Setting(row) => {
                    let raw = match row.action {
                        Action::StoreTrue | Action::StoreFalse => {
                            if let Some(v) = inline {
                                return Err(ConfigError::Usage(format!(
                                    "argument {}: ignored explicit argument '{v}'",
                                    flag_label(row)
                                )));
                            }
                            None
                        }
                        _ => inline.or_else(|| next_value(&mut i)),
                    };
                    st.record(row, raw)?;
                }
            }
            continue;
        }
        // Short options, possibly clustered (`-Dw2`) or with an attached value (`-w2`, `-w=2`).
        for (pos, c) in arg[1..].char_indices() {
            let flag = lookup_short(c)
                .ok_or_else(|| ConfigError::Usage(format!("unrecognized arguments: {arg}")))?;
            match flag {
                Flag::Help => st.parsed.help = true,
                Flag::Version => st.parsed.version = true,
                Flag::Setting(row) if row.takes_value() => {
                    let rest = &arg[1 + pos + c.len_utf8()..];
                    let raw = if rest.is_empty() {
                        next_value(&mut i)
                    } else {
                        Some(rest.strip_prefix('=').unwrap_or(rest).to_string())
                    };
                    st.record(row, raw)?;
                    break;
                }
                Flag::Setting(row) => st.record(row, None)?,
            }
        }
    }
    let State {
        mut parsed,
        appended,
    } = st;
    for (row, list) in appended {
        parsed.values.push((row, Input::Seq(list)));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn long_short_and_attached_forms() {
        for line in [
            "-w 3 app:app",
            "-w3 app:app",
            "-w=3 app:app",
            "--workers 3 app:app",
            "--workers=3 app:app",
        ] {
            let p = parse(&args(line)).unwrap();
            assert_eq!(p.get("workers"), Some(&Input::Int(3)), "{line}");
            assert_eq!(p.positional, vec!["app:app"], "{line}");
        }
    }

    #[test]
    fn append_collects_every_bind() {
        let p = parse(&args("-b 127.0.0.1:1 --bind unix:/tmp/x -b=[::1]:3 app")).unwrap();
        assert_eq!(
            p.get("bind"),
            Some(&Input::Seq(vec![
                Input::Str("127.0.0.1:1".into()),
                Input::Str("unix:/tmp/x".into()),
                Input::Str("[::1]:3".into())
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
    fn argparse_type_errors() {
        let err = parse(&args("-w many")).unwrap_err().to_string();
        assert!(
            err.contains("-w/--workers") && err.contains("invalid int value: 'many'"),
            "{err}"
        );
        let err = parse(&args("app -w")).unwrap_err().to_string();
        assert!(err.contains("expected one argument"), "{err}");
    }

    #[test]
    fn flags_without_values() {
        let p = parse(&args("--preload --no-sendfile -D -h --version")).unwrap();
        assert_eq!(p.get("preload_app"), Some(&Input::Bool(true)));
        assert_eq!(p.get("sendfile"), Some(&Input::Bool(false)));
        assert_eq!(p.get("daemon"), Some(&Input::Bool(true)));
        assert!(p.help && p.version);
    }

    #[test]
    fn optional_value_takes_const_or_next_word() {
        let p = parse(&args("--proxy-protocol --preload")).unwrap();
        assert_eq!(p.get("proxy_protocol"), Some(&Input::Str("auto".into())));
        let p = parse(&args("--proxy-protocol v2 app")).unwrap();
        assert_eq!(p.get("proxy_protocol"), Some(&Input::Str("v2".into())));
        assert_eq!(p.positional, vec!["app"]);
    }

    #[test]
    fn every_flag_is_recognized() {
        for row in ROWS {
            for flag in row.flags {
                let mut line = vec![flag.to_string()];
                if row.takes_value() {
                    line.push("1".into());
                }
                let p = parse(&line).unwrap_or_else(|e| panic!("{flag}: {e}"));
                assert!(p.get(row.name).is_some(), "{flag}");
            }
        }
    }
}

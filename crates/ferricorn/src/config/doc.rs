//! Text generated from the settings table: `--help` and `docs/settings.md`.
//!
//! The test below fails when the committed `docs/settings.md` differs from
//! what the table generates; run `FERRICORN_BLESS=1 cargo test -p ferricorn
//! settings_doc` to rewrite it. `--help` groups flags by section (gunicorn's is
//! one flat list) and marks settings ferricorn does not support yet.
//!
//! gunicorn counterpart: `docs/source/settings.rst` (generated there too) and
//! the argparse help of `Config.parser()`.

use super::table::{Kind, ROWS, Setting, sections};

fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Bool => "bool".into(),
        Kind::PosInt => "positive int".into(),
        Kind::PosFloat => "positive number or None".into(),
        Kind::Http2Window => "int (0..2147483647)".into(),
        Kind::Http2Streams => "int (>= 1)".into(),
        Kind::Http2Frame => "int (16384..16777215)".into(),
        Kind::Str | Kind::StatsdAddr => "string".into(),
        Kind::ListStr => "list of strings".into(),
        Kind::FilesOrPatterns => "list of files or globs".into(),
        Kind::StrToList => "comma-separated list".into(),
        Kind::AddrList => "comma-separated IP networks or *".into(),
        Kind::Dict => "dict".into(),
        Kind::Class => "class path".into(),
        Kind::Hook(n) => format!("callable ({n} args)"),
        Kind::PostRequestHook => "callable (2, 3 or 4 args)".into(),
        Kind::User => "user name or uid".into(),
        Kind::Group => "group name or gid".into(),
        Kind::Chdir => "directory".into(),
        Kind::ReloadEngine => "auto, poll, inotify".into(),
        Kind::SslVersion => "any (ignored)".into(),
        Kind::ProxyProtocol => "off, v1, v2, auto".into(),
        Kind::Http2Cleartext => "off, prior-knowledge, upgrade, both".into(),
        Kind::HttpProtocols => "comma-separated h1, h2".into(),
        Kind::HeaderMap => "drop, refuse, dangerous".into(),
        Kind::AsgiLoop => "auto, asyncio, uvloop".into(),
        Kind::AsgiLifespan => "auto, on, off".into(),
        Kind::HttpParser => "auto, fast, python".into(),
    }
}

/// The default as documented: environment- and machine-dependent ones by rule.
fn default_doc(row: &Setting) -> String {
    match row.name {
        "chdir" => "(current directory)".into(),
        "bind" => "['127.0.0.1:8000'] (['0.0.0.0:$PORT'] when PORT is set)".into(),
        "workers" => "1 ($WEB_CONCURRENCY when set)".into(),
        "forwarded_allow_ips" => "['127.0.0.1', '::1'] ($FORWARDED_ALLOW_IPS when set)".into(),
        "user" => "(effective uid)".into(),
        "group" => "(effective gid)".into(),
        "control_socket" => "$XDG_RUNTIME_DIR/gunicorn.ctl or $HOME/.gunicorn/gunicorn.ctl".into(),
        _ => (row.default)().to_string(),
    }
}

fn flag_forms(row: &Setting, code: bool) -> Vec<String> {
    let meta = row.metavar();
    row.flags
        .iter()
        .map(|f| {
            let text = match row.action {
                super::Action::StoreTrue | super::Action::StoreFalse => f.to_string(),
                super::Action::OptionalConst(_) => format!("{f} [{meta}]"),
                _ => format!("{f} {meta}"),
            };
            if code { format!("`{text}`") } else { text }
        })
        .collect()
}

/// `--help`: usage, then the flags of each section.
pub fn help_text(usage: &str) -> String {
    let mut out = format!(
        "{usage}\n\nA pre-fork WSGI HTTP server: gunicorn rebuilt in Rust.\n\n\
         positional arguments:\n  APP_MODULE            the WSGI application, e.g. module:app\n\n\
         options:\n  -h, --help            show this help message and exit\n  \
         -v, --version         show program's version number and exit\n"
    );
    for section in sections() {
        let rows: Vec<&Setting> = ROWS
            .iter()
            .filter(|r| r.section == section && !r.flags.is_empty())
            .collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{section}:\n"));
        for row in rows {
            let flags = flag_forms(row, false).join(", ");
            let mut text = format!("{} [{}]", row.short, default_doc(row));
            if !row.supported {
                text.push_str(" (not supported yet)");
            }
            if flags.len() <= 20 {
                out.push_str(&format!("  {flags:<20}  {text}\n"));
            } else {
                out.push_str(&format!("  {flags}\n                        {text}\n"));
            }
        }
    }
    out
}

/// The whole `docs/settings.md` page.
pub fn render() -> String {
    let supported = ROWS.iter().filter(|r| r.supported).count();
    let mut out = format!(
        "# Settings\n\n\
         Generated from the settings table (`crates/ferricorn/src/config/table.rs`); do not edit by hand.\n\n\
         Every gunicorn 27.0.1 setting has a row ({total} in all, {supported} supported today). \
         A setting marked *not yet* is accepted at its default; giving it any other value \
         (by flag, config file or `GUNICORN_CMD_ARGS`) stops start-up with one line naming it. \
         `--print-config` still prints such values, as gunicorn would.\n\n\
         Sources, later wins: defaults (some read `PORT`, `WEB_CONCURRENCY`, `FORWARDED_ALLOW_IPS`); \
         the config file (`-c PATH`, `-c file:PATH` or `-c python:MODULE`; without `-c`, a `-c` inside \
         `GUNICORN_CMD_ARGS`/`FERRICORN_CMD_ARGS`; else `./ferricorn.conf.py`, else `./gunicorn.conf.py`, \
         when present); `GUNICORN_CMD_ARGS`; `FERRICORN_CMD_ARGS` (ferricorn's own spelling, same syntax); \
         the command line. Config files are Python, run in the master and again on HUP; names that are \
         not settings are ignored. Server hooks are set in a config file (or through `ferricorn.app.base`); `--print-config` shows a \
         hook as `<qualified name()>`, for gunicorn's no-op defaults their gunicorn names.\n",
        total = ROWS.len(),
    );
    for section in sections() {
        out.push_str(&format!(
            "\n## {section}\n\n| setting | flags | type | default | supported | description |\n|---|---|---|---|---|---|\n"
        ));
        for row in ROWS.iter().filter(|r| r.section == section) {
            let flags = if row.flags.is_empty() {
                "(config file only)".to_string()
            } else {
                flag_forms(row, true).join(", ")
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | `{}` | {} | {} |\n",
                row.name,
                flags,
                kind_name(row.kind),
                default_doc(row).replace('|', "\\|"),
                if row.supported { "yes" } else { "not yet" },
                row.short.replace('|', "\\|")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_doc_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/settings.md");
        let want = super::render();
        if std::env::var_os("FERRICORN_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/settings.md is out of date: run FERRICORN_BLESS=1 cargo test -p ferricorn settings_doc"
        );
    }

    #[test]
    fn help_lists_every_flag_by_section() {
        let h = super::help_text("usage: x");
        assert!(
            h.contains("Server Socket:\n  -b ADDRESS, --bind ADDRESS"),
            "{h}"
        );
        for row in super::ROWS {
            for flag in row.flags {
                assert!(h.contains(flag), "{flag} missing from --help");
            }
        }
    }
}

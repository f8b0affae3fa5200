//! `docs/settings.md`, generated from the settings table.
//!
//! The test below fails when the committed file differs from what the table
//! generates; run `FERRICORN_BLESS=1 cargo test -p ferricorn settings_doc` to
//! rewrite it.

use super::table::{Action, Kind, ROWS};

fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Bool => "bool".into(),
        Kind::Int => "int".into(),
        Kind::PosInt => "positive int".into(),
        Kind::Number => "number".into(),
        Kind::Str => "string".into(),
        Kind::OptStr => "string or None".into(),
        Kind::List => "list of strings".into(),
        Kind::Hook(n) => format!("callable ({n} args)"),
        Kind::Choice(c) => format!("one of {}", c.join(", ")),
    }
}

/// The whole markdown page.
pub fn render() -> String {
    let mut out = String::from(
        "# Settings\n\n\
         Generated from the settings table (`crates/ferricorn/src/config/table.rs`); do not edit by hand.\n\n\
         Every gunicorn setting has a row. A setting marked *not yet* is accepted at its default; \
         giving it any other value stops start-up with a message naming it.\n",
    );
    let mut section = "";
    for row in ROWS {
        if row.section != section {
            section = row.section;
            out.push_str(&format!(
                "\n## {section}\n\n| setting | flags | type | default | supported | description |\n|---|---|---|---|---|---|\n"
            ));
        }
        let flags = if row.flags.is_empty() {
            "(config file only)".to_string()
        } else {
            let takes = matches!(row.action, Action::Store | Action::Append);
            row.flags
                .iter()
                .map(|f| {
                    if takes {
                        format!("`{f} {}`", row.meta)
                    } else {
                        format!("`{f}`")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let default = (row.default)().to_string();
        let default = if row.name == "chdir" {
            "(current directory)".to_string()
        } else {
            default
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | `{}` | {} | {} |\n",
            row.name,
            flags,
            kind_name(row.kind),
            default.replace('|', "\\|"),
            if row.supported { "yes" } else { "not yet" },
            row.short.replace('|', "\\|")
        ));
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
}

//! Plain Rust values of settings, printable and comparable without Python.
//!
//! `Display` renders a value exactly as gunicorn's `--print-config` does,
//! which is Python's `str()` of the value: strings bare, lists and dicts with
//! their items in `repr()` form, floats in Python's shortest round-trip form,
//! callables as `<qualname()>`.
//!
//! gunicorn counterpart: `Config.__str__`.

use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<String>),
    /// A dictionary of strings (e.g. `secure_scheme_headers`), in insertion order.
    Map(Vec<(String, String)>),
    /// Any other Python value, kept as the text gunicorn prints for it
    /// (for a callable `<qualname()>`, otherwise `str(value)`).
    Object(String),
}

impl Value {
    pub fn as_bool(&self) -> bool {
        matches!(self, Value::Bool(true))
    }
    pub fn as_int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Float(f) => *f as i64,
            Value::Bool(b) => i64::from(*b),
            _ => 0,
        }
    }
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            _ => 0.0,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_list(&self) -> &[String] {
        match self {
            Value::List(l) => l,
            _ => &[],
        }
    }
    pub fn as_map(&self) -> &[(String, String)] {
        match self {
            Value::Map(m) => m,
            _ => &[],
        }
    }
}

/// Python's `repr()` of a `str`.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa1).contains(&(c as u32)) || c == '\u{ad}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a `float`: shortest round-trip digits, scientific
/// notation below 1e-4 and from 1e16 on.
pub fn py_repr_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "1.5e-5", "-1e16".
    let sci = format!("{x:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exp) {
        let mut m = digits[..1].to_string();
        if digits.len() > 1 {
            m.push('.');
            m.push_str(&digits[1..]);
        }
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
    } else if (point as usize) >= digits.len() {
        format!(
            "{sign}{digits}{}.0",
            "0".repeat(point as usize - digits.len())
        )
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{sign}{a}.{b}")
    }
}

/// Renders a value as gunicorn's `--print-config` shows it (Python's `str()`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&py_repr_float(*x)),
            Value::Str(s) => f.write_str(s),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(|s| py_repr_str(s)).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Map(pairs) => {
                let items: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr_str(v)))
                    .collect();
                write!(f, "{{{}}}", items.join(", "))
            }
            Value::Object(r) => f.write_str(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        for (x, want) in [
            (0.5, "0.5"),
            (30.0, "30.0"),
            (1e16, "1e+16"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789012345.6, "123456789012345.6"),
            (-2.25, "-2.25"),
            (1e22, "1e+22"),
        ] {
            assert_eq!(py_repr_float(x), want, "{x}");
        }
    }

    #[test]
    fn str_repr_matches_python() {
        assert_eq!(py_repr_str("a"), "'a'");
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr_str("'\""), "'\\'\"'");
        assert_eq!(py_repr_str("a\\b\n"), "'a\\\\b\\n'");
    }

    #[test]
    fn containers_render_like_python() {
        let v = Value::Map(vec![("X-A".into(), "on".into())]);
        assert_eq!(v.to_string(), "{'X-A': 'on'}");
        assert_eq!(Value::Map(vec![]).to_string(), "{}");
        let v = Value::List(vec!["127.0.0.1".into(), "::1".into()]);
        assert_eq!(v.to_string(), "['127.0.0.1', '::1']");
        assert_eq!(Value::Float(2.0).to_string(), "2.0");
    }
}

//! The control socket's wire protocol and commands (no I/O here).
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! UTF-8 JSON. A request is `{"id": ID, "command": "worker add", "args":
//! [2]}`; the command string is split as a shell would split it and the
//! `args` are appended. The reply carries the same `id`: `{"id": ID,
//! "status": "ok", "data": {...}}` or `{"id": ID, "status": "error",
//! "error": "..."}`. Commands, argument rules and reply shapes are
//! gunicorn 27's, so its `gunicornc` and scripts written for it work.
//!
//! Invariant: parsing never panics and never allocates more than the frame
//! (at most [`MAX_FRAME`] bytes); anything malformed is an error reply.
//!
//! gunicorn counterpart: `gunicorn/ctl/protocol.py` (framing, request and
//! response shapes) and `ControlSocketServer._dispatch` / `_execute_command`
//! in `gunicorn/ctl/server.py` (command routing and its error texts).

pub mod server;

use serde_json::{Map, Value, json};

/// The largest request accepted, in bytes (gunicorn allows 16 MiB; a
/// control request is a few dozen bytes, and the master must not buffer
/// much for a client).
pub const MAX_FRAME: usize = 64 * 1024;

/// A parsed control command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    ShowAll,
    ShowWorkers,
    ShowDirty,
    ShowConfig,
    ShowStats,
    ShowListeners,
    WorkerAdd(usize),
    WorkerRemove(usize),
    WorkerKill(i32),
    DirtyAdd,
    DirtyRemove,
    Reload,
    Reopen,
    /// `shutdown [graceful|quick]`: `mode` is echoed back as given.
    Shutdown {
        quick: bool,
        mode: String,
    },
    Help,
}

/// One decoded request: its `id` (echoed back) and the command, or why
/// the command is refused (answered as an error reply).
#[derive(Debug, PartialEq)]
pub struct Request {
    pub id: Value,
    pub command: Result<Command, String>,
}

/// Encode one frame.
pub fn frame(reply: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(reply).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The length announced by a frame's 4-byte prefix.
pub fn frame_len(prefix: [u8; 4]) -> usize {
    u32::from_be_bytes(prefix) as usize
}

pub fn ok_reply(id: &Value, data: Value) -> Value {
    json!({"id": id, "status": "ok", "data": data})
}

pub fn error_reply(id: &Value, error: &str) -> Value {
    json!({"id": id, "status": "error", "error": error})
}

/// Decode a frame's payload. `Err` when it is not a JSON object (the
/// connection is then answered and closed: the stream cannot be trusted).
pub fn decode(payload: &[u8]) -> Result<Request, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("Invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("Invalid request: not a JSON object".into());
    };
    let id = map.get("id").cloned().unwrap_or(json!(0));
    Ok(Request {
        command: command_of(&map),
        id,
    })
}

fn command_of(map: &Map<String, Value>) -> Result<Command, String> {
    let text = match map.get("command") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err("Invalid request: command must be a string".into()),
    };
    if text.is_empty() {
        return Err("Empty command".into());
    }
    let mut parts = split_words(text).map_err(|e| format!("Invalid argument: {e}"))?;
    match map.get("args") {
        None | Some(Value::Null) => {}
        Some(Value::Array(args)) => parts.extend(args.iter().map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        Some(_) => return Err("Invalid request: args must be a list".into()),
    }
    parse_command(&parts).map_err(|e| format!("Invalid argument: {e}"))
}

/// Route the words of a command (gunicorn's `_execute_command`).
pub fn parse_command(parts: &[String]) -> Result<Command, String> {
    let lower = |i: usize| parts.get(i).map(|s| s.to_ascii_lowercase());
    let Some(cmd) = lower(0) else {
        return Err("Empty command".into());
    };
    let count = |i: usize| -> Result<usize, String> {
        match parts.get(i) {
            None => Ok(1),
            Some(s) => python_int(s).map(|n| n.max(1) as usize),
        }
    };
    Ok(match cmd.as_str() {
        "show" => match lower(1).as_deref() {
            None => {
                return Err(
                    "Missing show target (all|workers|dirty|config|stats|listeners)".into(),
                );
            }
            Some("all") => Command::ShowAll,
            Some("workers") => Command::ShowWorkers,
            Some("dirty") => Command::ShowDirty,
            Some("config") => Command::ShowConfig,
            Some("stats") => Command::ShowStats,
            Some("listeners") => Command::ShowListeners,
            Some(other) => return Err(format!("Unknown show target: {other}")),
        },
        "worker" => match lower(1).as_deref() {
            None => return Err("Missing worker action (add|remove|kill)".into()),
            Some("add") => Command::WorkerAdd(count(2)?),
            Some("remove") => Command::WorkerRemove(count(2)?),
            Some("kill") => match parts.get(2) {
                None => return Err("Missing PID for worker kill".into()),
                Some(p) => Command::WorkerKill(
                    i32::try_from(python_int(p)?).map_err(|_| format!("no such PID: {p}"))?,
                ),
            },
            Some(other) => return Err(format!("Unknown worker action: {other}")),
        },
        "dirty" => match lower(1).as_deref() {
            None => return Err("Missing dirty action (add|remove)".into()),
            Some("add") => {
                count(2)?;
                Command::DirtyAdd
            }
            Some("remove") => {
                count(2)?;
                Command::DirtyRemove
            }
            Some(other) => return Err(format!("Unknown dirty action: {other}")),
        },
        "reload" => Command::Reload,
        "reopen" => Command::Reopen,
        "shutdown" => {
            let mode = parts.get(1).cloned().unwrap_or_else(|| "graceful".into());
            Command::Shutdown {
                quick: mode == "quick",
                mode,
            }
        }
        "help" => Command::Help,
        other => return Err(format!("Unknown command: {other}")),
    })
}

/// Python's `int(s)` for the decimal strings a command carries.
fn python_int(s: &str) -> Result<i64, String> {
    let t = s.trim().replace('_', "");
    t.parse::<i64>()
        .map_err(|_| format!("invalid literal for int() with base 10: '{s}'"))
}

/// Split a command line into words as POSIX shells (and `shlex.split`) do:
/// whitespace separates, single quotes keep everything, double quotes keep
/// everything but `\"` and `\\`, a backslash outside quotes escapes one byte.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("No closing quotation".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("No closing quotation".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("No closing quotation".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("No escaped character".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The `help` reply: every command with one line on what it does.
pub fn help() -> Value {
    let mut commands = Map::new();
    for (cmd, what) in [
        ("show all", "Show every process: the master and its workers"),
        ("show workers", "List the HTTP workers and their state"),
        (
            "show dirty",
            "Dirty-app pools (none: ferricorn has no dirty arbiter)",
        ),
        ("show config", "Show the main settings in effect"),
        (
            "show stats",
            "Show counters: uptime, workers spawned and killed, reloads",
        ),
        ("show listeners", "Show the bound sockets"),
        ("worker add [N]", "Add N workers (default 1)"),
        (
            "worker remove [N]",
            "Remove N workers (default 1; never below 1)",
        ),
        (
            "worker kill <PID>",
            "Stop one worker gracefully; a new one replaces it",
        ),
        (
            "dirty add [N]",
            "Add dirty workers (refused: no dirty pool)",
        ),
        (
            "dirty remove [N]",
            "Remove dirty workers (refused: no dirty pool)",
        ),
        (
            "reload",
            "Reload the configuration and replace the workers (HUP)",
        ),
        ("reopen", "Reopen the log files (USR1)"),
        (
            "shutdown [graceful|quick]",
            "Stop the server (TERM, or INT when quick)",
        ),
        ("help", "Show this list"),
    ] {
        commands.insert(cmd.into(), Value::String(what.into()));
    }
    json!({ "commands": commands })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Request {
        decode(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let f = frame(&json!({"a": 1}));
        assert_eq!(frame_len([f[0], f[1], f[2], f[3]]), f.len() - 4);
        assert_eq!(&f[4..], br#"{"a":1}"#);
    }

    #[test]
    fn commands_parse_like_gunicorn() {
        let cases = [
            (json!({"id": 1, "command": "show workers"}), Ok(Command::ShowWorkers)),
            (json!({"id": 1, "command": "SHOW Stats"}), Ok(Command::ShowStats)),
            (json!({"id": 1, "command": "worker add", "args": [3]}), Ok(Command::WorkerAdd(3))),
            (json!({"id": 1, "command": "worker add 0"}), Ok(Command::WorkerAdd(1))),
            (json!({"id": 1, "command": "worker remove"}), Ok(Command::WorkerRemove(1))),
            (json!({"id": 1, "command": "worker kill 42"}), Ok(Command::WorkerKill(42))),
            (
                json!({"id": 1, "command": "shutdown"}),
                Ok(Command::Shutdown { quick: false, mode: "graceful".into() }),
            ),
            (
                json!({"id": 1, "command": "shutdown quick"}),
                Ok(Command::Shutdown { quick: true, mode: "quick".into() }),
            ),
            (json!({"id": 1, "command": "  "}), Err("Empty command".to_string())),
            (json!({"id": 1}), Err("Empty command".to_string())),
            (
                json!({"id": 1, "command": "frobnicate"}),
                Err("Invalid argument: Unknown command: frobnicate".to_string()),
            ),
            (
                json!({"id": 1, "command": "show"}),
                Err("Invalid argument: Missing show target (all|workers|dirty|config|stats|listeners)"
                    .to_string()),
            ),
            (
                json!({"id": 1, "command": "worker add many"}),
                Err("Invalid argument: invalid literal for int() with base 10: 'many'".to_string()),
            ),
            (
                json!({"id": 1, "command": "worker kill"}),
                Err("Invalid argument: Missing PID for worker kill".to_string()),
            ),
            (
                json!({"id": 1, "command": "show 'workers"}),
                Err("Invalid argument: No closing quotation".to_string()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(req(input.clone()).command, want, "{input}");
        }
    }

    #[test]
    fn id_is_echoed_and_defaults_to_zero() {
        assert_eq!(req(json!({"id": "x", "command": "help"})).id, json!("x"));
        assert_eq!(req(json!({"command": "help"})).id, json!(0));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not json").is_err());
        assert!(decode(b"[1, 2]").is_err());
        assert!(decode(&[0xff, 0xfe]).is_err());
        assert_eq!(
            decode(br#"{"command": 5}"#).unwrap().command,
            Err("Invalid request: command must be a string".into())
        );
    }

    #[test]
    fn words_split_as_a_shell_does() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(
            w(" a  'b c' \"d\\\"e\" f\\ g "),
            vec!["a", "b c", "d\"e", "f g"]
        );
        assert_eq!(w(""), Vec::<String>::new());
        assert_eq!(w("''"), vec![""]);
    }
}

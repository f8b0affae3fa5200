//! Sans-IO HTTP/1.1 for ferricorn (placeholder until the parser lands).

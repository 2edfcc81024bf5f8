//! The pipeline config parser on arbitrary text: it never panics; an error
//! always points inside the text (line and column of a real position, the
//! excerpt showing that line); an accepted pipeline is described without
//! panicking and parses again to the same result.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match weir::service::config::parse("fuzz.toml", text, Path::new(".")) {
        Err(e) => {
            let lines = text.split('\n').count().max(1);
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            let line = text.split('\n').nth(e.line - 1).unwrap_or("");
            assert!(
                e.column >= 1 && e.column <= line.chars().count() + 1,
                "column {}",
                e.column
            );
            assert!(!e.key.is_empty() && !e.expected.is_empty() && !e.hint.is_empty());
            let _ = e.to_string();
        }
        Ok(p) => {
            let _ = weir::service::describe(&p);
            let again = weir::service::config::parse("fuzz.toml", text, Path::new("."));
            assert_eq!(again.as_ref().ok(), Some(&p));
        }
    }
});

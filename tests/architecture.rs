//! The shape of the code, checked: the module layering `docs/ARCHITECTURE.md`
//! draws, no import cycle between the crate's top-level modules, and the size
//! limits of the style guide (a production file at most
//! `FILE_LINES_MAX` lines, a function at most `FN_LINES_MAX`).
//!
//! It reads `src/` as text (no compiler involved): a dependency is any
//! `crate::<module>` path in code (comments aside), including the names the
//! crate root re-exports. Test code (`#[cfg(test)] mod tests`, files named
//! `tests.rs`) does not count towards the limits.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Most lines of production code in one file.
const FILE_LINES_MAX: usize = 800;
/// Most lines in one function, signature to closing brace.
const FN_LINES_MAX: usize = 120;

/// Modules that may not depend on the ones listed: the layering.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The ground floor: pure engine, no I/O, no scheduler.
    (
        "dstream",
        &[
            "wal",
            "storage",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    // SQL is an operator library on the engine: it may build DStreams and
    // write its schema files through `storage`, nothing of the runtime.
    (
        "sql",
        &[
            "wal",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    // Streaming ML is an operator library on the engine, like SQL: pure
    // arithmetic and stateful DStream operators, nothing of the runtime.
    (
        "ml",
        &[
            "wal",
            "storage",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    // The log knows nothing of batches, DStreams or sled.
    (
        "wal",
        &[
            "dstream",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    (
        "storage",
        &[
            "wal",
            "dstream",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    // The checkpoint sits below the scheduler and never reads the WAL.
    (
        "checkpoint",
        &[
            "scheduler",
            "wal",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    (
        "scheduler",
        &[
            "wal", "context", "receiver", "ingest", "source", "sink", "service", "cli",
        ],
    ),
    // Receivers feed logs; they neither write outputs nor know the context.
    ("receiver", &["sink", "context", "service", "cli"]),
    ("ingest", &["sink", "service", "cli"]),
    (
        "source",
        &["sink", "context", "receiver", "ingest", "service", "cli"],
    ),
    (
        "sink",
        &["receiver", "ingest", "source", "service", "cli", "wal"],
    ),
    // The NATS client plumbing the JetStream source and sink share.
    (
        "nats",
        &[
            "dstream",
            "wal",
            "storage",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    // The Kafka client plumbing the Kafka source and sink share (it may
    // use the NATS module's runtime wrapper and `net`'s TLS).
    (
        "kafka",
        &[
            "dstream",
            "wal",
            "storage",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    // TLS and tokens of the listeners (status endpoint, later ingest).
    (
        "net",
        &[
            "dstream",
            "wal",
            "storage",
            "checkpoint",
            "scheduler",
            "context",
            "receiver",
            "ingest",
            "source",
            "sink",
            "service",
            "cli",
        ],
    ),
    ("context", &["service", "cli"]),
    ("service", &["cli"]),
];

/// Modules outside the layering: the crate's aggregate error type names every
/// module's error, the crate root only declares and re-exports, and the
/// testing facade re-exports internals for tests.
const OUTSIDE: &[&str] = &["error", "lib", "main", "testing"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/wal/reader.rs` → `wal`).
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src_dir()).expect("under src/");
    let first = rel.components().next().expect("a component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// The production part of a file: everything before `#[cfg(test)] mod tests`.
fn production_lines(path: &Path, text: &str) -> Vec<String> {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return Vec::new();
    }
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    for i in 0..lines.len().saturating_sub(1) {
        let next = lines[i + 1].trim_start();
        if lines[i].trim() == "#[cfg(test)]"
            && (next.starts_with("mod tests") || next.starts_with("pub(crate) mod tests"))
        {
            return lines[..i].to_vec();
        }
    }
    lines
}

/// Names the crate root re-exports, mapped to the module they come from.
fn root_reexports() -> BTreeMap<String, String> {
    let text = fs::read_to_string(src_dir().join("lib.rs")).expect("read lib.rs");
    let mut map = BTreeMap::new();
    for stmt in text.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let module: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let names = rest.split(['{', '}', ',', ':']).map(str::trim);
        for name in names {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                map.insert(name.to_string(), module.clone());
            }
        }
    }
    map
}

/// Every top-level module a file's text names through `crate::`.
fn dependencies(text: &str, reexports: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(found) = text[at..].find("crate::") {
        let crate_at = at + found;
        let start = crate_at + "crate::".len();
        at = start;
        if crate_at > 0 {
            let before = bytes[crate_at - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue; // `mycrate::`, not `crate::`
            }
        }
        if text[start..].starts_with('{') {
            deps.extend(group_heads(&text[start..], reexports));
        } else {
            let head: String = text[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            deps.extend(resolve(&head, reexports));
        }
    }
    deps
}

/// The first segment of every path in a `{a::b, c, D}` group.
fn group_heads(group: &str, reexports: &BTreeMap<String, String>) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut current = String::new();
    for c in group.chars() {
        match c {
            '{' => {
                depth += 1;
                item_start = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => item_start = true,
            c if depth == 1 && item_start && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ if depth == 1 && item_start && !current.is_empty() => {
                heads.extend(resolve(&current, reexports));
                current.clear();
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn resolve(head: &str, reexports: &BTreeMap<String, String>) -> Option<String> {
    if head.is_empty() || head == "self" {
        return None;
    }
    if head.starts_with(|c: char| c.is_ascii_uppercase()) {
        return reexports.get(head).cloned();
    }
    Some(head.to_string())
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let reexports = root_reexports();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let module = module_of(&path);
        let text = fs::read_to_string(&path).expect("read source");
        let prod: Vec<String> = production_lines(&path, &text)
            .into_iter()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        let prod = prod.join("\n");
        let deps = dependencies(&prod, &reexports);
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != module));
    }
    graph
}

#[test]
fn layering_holds() {
    let graph = module_graph();
    let mut broken = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        let Some(deps) = graph.get(*module) else {
            continue;
        };
        for dep in deps.iter().filter(|d| forbidden.contains(&d.as_str())) {
            broken.push(format!("{module} depends on {dep}"));
        }
    }
    assert!(
        broken.is_empty(),
        "layering broken: {broken:#?}\ngraph: {graph:#?}"
    );
}

#[test]
fn no_import_cycle_between_modules() {
    let graph = module_graph();
    let inside = |m: &str| !OUTSIDE.contains(&m);
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        inside: &dyn Fn(&str) -> bool,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for dep in graph.get(m).into_iter().flatten().filter(|d| inside(d)) {
            if let Some(cycle) = visit(dep, graph, inside, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys().filter(|m| inside(m)) {
        let cycle = visit(m, &graph, &inside, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn production_files_stay_small() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut over = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).expect("read source");
        let n = production_lines(&path, &text).len();
        if n > FILE_LINES_MAX {
            over.push(format!("{}: {n} lines", path.display()));
        }
    }
    assert!(
        over.is_empty(),
        "files over {FILE_LINES_MAX} production lines: {over:#?}"
    );
}

/// The length of every `fn` in the text: from its line to its closing brace.
fn function_lengths(lines: &[String]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let is_fn = t.starts_with("fn ")
            || t.starts_with("pub fn ")
            || t.starts_with("pub(crate) fn ")
            || t.starts_with("pub(super) fn ")
            || t.starts_with("async fn ")
            || t.starts_with("pub async fn ")
            || t.starts_with("unsafe fn ")
            || t.starts_with("pub unsafe fn ")
            || t.starts_with("const fn ")
            || t.starts_with("pub const fn ");
        if !is_fn {
            continue;
        }
        let (mut depth, mut started) = (0i64, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            if !started && l.trim_end().ends_with(';') {
                break; // a declaration without a body (trait method)
            }
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        started = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if started && depth <= 0 {
                out.push((i + 1, j - i + 1));
                break;
            }
        }
    }
    out
}

#[test]
fn functions_stay_short() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let mut over = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).expect("read source");
        let lines = production_lines(&path, &text);
        for (line, len) in function_lengths(&lines) {
            if len > FN_LINES_MAX {
                over.push(format!("{}:{line}: {len} lines", path.display()));
            }
        }
    }
    assert!(
        over.is_empty(),
        "functions over {FN_LINES_MAX} lines: {over:#?}"
    );
}

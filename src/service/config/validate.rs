//! The validator: raw tables (`raw.rs`) → a [`Pipeline`] (`model.rs`).
//! It checks, in this order: the sections' shapes and every key's name
//! (against the tables' keys), the settings, then each source, step and
//! sink in file order: the keys that apply to its kind or op, their
//! types, the kind of records it reads, its own checks (the builder of
//! its table entry), its id. Every check is driven by the tables of
//! `sources.rs`, `ops.rs` and `sinks.rs`; nothing here names an op.
//!
//! Limits: [`super::ITEMS_MAX`] sources + steps + sinks.
//! Must never: build streams, touch the disk, or accept a step that reads
//! a stream declared below it (every input precedes its user).

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::error::{toml_error, ConfigError, Src};
use super::keys::{entry_names, find, names, Entry, Item, KeySpec, KeyType};
use super::model::{Kind, Node, Pipeline, SinkDef, SourceDef, StepDef};
use super::ops::{op_names, OPS};
use super::raw::{describe, RawFile, RawItem, RawTop};
use super::settings::{settings, PIPELINE_KEYS, SERVICE_KEYS};
use super::sinks::{sink_names, SINKS};
use super::sources::SOURCES;

const ID: KeySpec = KeySpec::of(
    "id",
    KeyType::Text,
    "a plain name; batches and state are kept under it, so keep it stable",
);
const KIND: KeySpec = KeySpec::of(
    "kind",
    KeyType::Text,
    "what it is; docs/pipeline.md lists every kind",
);
const NAME: KeySpec = KeySpec::of(
    "name",
    KeyType::Text,
    "the operator's stable name: a stateful step keeps its state under it",
);
const FROM: KeySpec = KeySpec::of("from", KeyType::Text, "the id of the stream it reads");
const STEP_FROM: KeySpec = KeySpec::of(
    "from",
    KeyType::Names,
    "the id of the stream it reads (a list of ids for op = \"sql\" joining streams)",
);
const OP: KeySpec = KeySpec::of(
    "op",
    KeyType::Text,
    "what the step does; docs/pipeline.md lists every op",
);

/// Keys every `[[source]]`, `[[step]]`, `[[sink]]` may have, whatever
/// its kind or op.
const SOURCE_COMMON: &[KeySpec] = &[ID, KIND];
const STEP_COMMON: &[KeySpec] = &[ID, NAME, STEP_FROM, OP];
const SINK_COMMON: &[KeySpec] = &[FROM, KIND];

/// The top-level keys, and whether each is one table (else a list).
const SECTIONS: &[(&str, bool)] = &[
    ("pipeline", true),
    ("service", true),
    ("source", false),
    ("step", false),
    ("sink", false),
];

/// The stream a step or sink reads, and the key that chose what it does
/// (`op` or `kind`: input-kind errors point at it).
pub(super) struct Input<'a> {
    pub(super) item: &'a Item<'a>,
    /// What the input carries.
    pub(super) kind: Kind,
    /// The input's id.
    pub(super) id: &'a str,
    /// `op` or `kind`.
    selector: &'static str,
    span: Range<usize>,
    /// `op = "top"`.
    what: String,
}

impl<'a> Input<'a> {
    /// Node `input` as read by `item`, whose `selector` key chose `chosen`.
    fn new(
        item: &'a Item<'a>,
        nodes: &'a [Node],
        input: usize,
        selector: &KeySpec,
        chosen: &Spanned<&str>,
    ) -> Input<'a> {
        Input {
            item,
            kind: nodes[input].kind(),
            id: nodes[input].id(),
            selector: selector.name,
            span: chosen.span(),
            what: format!("{} = \"{}\"", selector.name, chosen.get_ref()),
        }
    }

    /// Refuses an input that is not of one of `kinds`.
    pub(super) fn needs(&self, kinds: &[Kind], hint: &str) -> Result<(), ConfigError> {
        if kinds.contains(&self.kind) {
            return Ok(());
        }
        Err(self.item.err(
            self.span.clone(),
            self.selector,
            format!(
                "an input of {} for {}",
                Kind::labels(kinds, " or "),
                self.what
            ),
            Some(format!("{} from `{}`", self.kind.label(), self.id)),
            hint,
        ))
    }
}

/// What an op's builder gets.
pub(super) struct StepIn<'a> {
    /// The step's table.
    pub(super) item: &'a Item<'a>,
    /// Its input (the first of `from`).
    pub(super) input: &'a Input<'a>,
    /// The other streams of a `from` list (only `op = "sql"` takes them).
    pub(super) also: &'a [Input<'a>],
    /// The batch interval (windows are whole batches).
    pub(super) interval_ms: u64,
    /// The pipeline file's directory (relative paths start there).
    pub(super) base: &'a Path,
}

/// What a sink's builder gets.
pub(super) struct SinkIn<'a> {
    /// The sink's table.
    pub(super) item: &'a Item<'a>,
    /// What its input carries.
    pub(super) input: Kind,
    /// The pipeline file's directory (relative paths of files the sink
    /// reads, such as credentials, start there; outputs are under the
    /// data directory).
    pub(super) base: &'a Path,
}

/// The file's tables, each with its entries in file order.
struct Sections {
    pipeline: RawItem,
    service: RawItem,
    source: Vec<RawItem>,
    step: Vec<RawItem>,
    sink: Vec<RawItem>,
}

/// Parses and validates `src`; relative paths resolve against `base`.
pub(super) fn validate(src: &Src<'_>, base: &Path) -> Result<Pipeline, ConfigError> {
    let top: RawTop = toml::from_str(src.text).map_err(|e| toml_error(src, &e))?;
    check_sections(src, &top)?;
    let raw: RawFile = toml::from_str(src.text).map_err(|e| toml_error(src, &e))?;
    let file = Sections {
        pipeline: raw.pipeline.map_or_else(RawItem::empty, RawItem::from),
        service: raw.service.map_or_else(RawItem::empty, RawItem::from),
        source: raw.source.into_iter().map(RawItem::from).collect(),
        step: raw.step.into_iter().map(RawItem::from).collect(),
        sink: raw.sink.into_iter().map(RawItem::from).collect(),
    };
    check_key_names(src, &file)?;
    Validator {
        src,
        base,
        interval_ms: 1000,
    }
    .pipeline(&file)
}

/// Every top-level key is a section, with its shape: `[pipeline]`,
/// `[service]` one table each, `[[source]]`, `[[step]]`, `[[sink]]` lists
/// of tables. The first mistake in the file is reported.
fn check_sections(src: &Src<'_>, top: &RawTop) -> Result<(), ConfigError> {
    let mut entries: Vec<_> = top.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let all: Vec<&str> = SECTIONS.iter().map(|s| s.0).collect();
    for (k, v) in entries {
        let Some(&(name, one)) = SECTIONS.iter().find(|s| s.0 == k.get_ref()) else {
            return Err(src.unknown_key(k.span(), k.get_ref(), &all));
        };
        let ok = match v.get_ref() {
            toml::Value::Table(_) => one,
            toml::Value::Array(a) => !one && a.iter().all(toml::Value::is_table),
            _ => false,
        };
        if !ok {
            let (expected, hint) = if one {
                (
                    format!("a [{name}] table"),
                    format!("write [{name}] on a line of its own, its keys below it"),
                )
            } else {
                (
                    format!("[[{name}]] tables"),
                    format!("write [[{name}]] on a line of its own above each one's keys"),
                )
            };
            return Err(src.err(v.span(), name, expected, Some(describe(v.get_ref())), hint));
        }
    }
    Ok(())
}

/// Every key of every table is one that its section's tables list (the
/// first unknown one in the file is reported, with the nearest known).
fn check_key_names(src: &Src<'_>, f: &Sections) -> Result<(), ConfigError> {
    let pipeline = names(PIPELINE_KEYS);
    let service = names(SERVICE_KEYS);
    let source = key_union(SOURCE_COMMON, SOURCES);
    let step = key_union(STEP_COMMON, OPS);
    let sink = key_union(SINK_COMMON, SINKS);
    let tables = [(&f.pipeline, &pipeline), (&f.service, &service)]
        .into_iter()
        .chain(f.source.iter().map(|t| (t, &source)))
        .chain(f.step.iter().map(|t| (t, &step)))
        .chain(f.sink.iter().map(|t| (t, &sink)));
    let mut first: Option<(&Spanned<String>, &Vec<&str>)> = None;
    for (t, known) in tables {
        for (k, _) in &t.entries {
            let earlier = first.is_some_and(|(f, _)| f.span().start <= k.span().start);
            if !known.contains(&k.get_ref().as_str()) && !earlier {
                first = Some((k, known));
            }
        }
    }
    match first {
        Some((k, known)) => Err(src.unknown_key(k.span(), k.get_ref(), known)),
        None => Ok(()),
    }
}

/// The common keys, then every key an entry of `table` takes (once each).
fn key_union<E: Entry>(common: &[KeySpec], table: &[E]) -> Vec<&'static str> {
    let mut all = names(common);
    for k in table.iter().flat_map(Entry::keys) {
        if !all.contains(&k.name) {
            all.push(k.name);
        }
    }
    all
}

struct Validator<'a> {
    src: &'a Src<'a>,
    base: &'a Path,
    /// The batch interval, once the settings are read (windows are
    /// checked against it).
    interval_ms: u64,
}

impl Validator<'_> {
    fn item<'i>(&'i self, path: &'i str, raw: &'i RawItem) -> Item<'i> {
        Item {
            src: self.src,
            path,
            raw,
        }
    }

    /// The file error (at its start) of a pipeline without `what`.
    fn missing(&self, key: &str, expected: &str, hint: &str) -> ConfigError {
        self.src.err(0..0, key, expected, None, hint)
    }

    fn pipeline(mut self, f: &Sections) -> Result<Pipeline, ConfigError> {
        let settings = settings(
            &self.item("pipeline", &f.pipeline),
            &self.item("service", &f.service),
            self.base,
        )?;
        self.interval_ms = u64::try_from(settings.batch_interval.as_millis()).unwrap_or(u64::MAX);
        let total = f.source.len() + f.step.len() + f.sink.len();
        if total > super::ITEMS_MAX {
            return Err(self.src.err(
                0..0,
                "(file)",
                format!("at most {} sources, steps and sinks", super::ITEMS_MAX),
                Some(total.to_string()),
                "split the pipeline into several services",
            ));
        }
        if f.source.is_empty() {
            let hint = "add e.g. [[source]] id = \"tweets\" kind = \"generator\"";
            return Err(self.missing("source", "at least one [[source]] table", hint));
        }
        let mut nodes: Vec<Node> = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for (i, raw) in f.source.iter().enumerate() {
            let path = format!("source[{i}]");
            let item = self.item(&path, raw);
            let src = self.source(&item)?;
            let span = item.text(&ID)?.map_or(item.span(), |s| s.span());
            self.unique_id(&mut ids, &item, &src.id, span)?;
            nodes.push(Node::Source(src));
        }
        for (i, raw) in f.step.iter().enumerate() {
            let path = format!("step[{i}]");
            let item = self.item(&path, raw);
            let step = self.step(&item, i, &nodes)?;
            let span = item.text(&ID)?.map_or(item.span(), |s| s.span());
            self.unique_id(&mut ids, &item, &step.id, span)?;
            if step.name != step.id {
                let span = item.text(&NAME)?.map_or(item.span(), |s| s.span());
                self.unique_id(&mut ids, &item, &step.name, span)?;
            }
            nodes.push(Node::Step(step));
        }
        if f.sink.is_empty() {
            let hint = "nothing runs without an output: add e.g. [[sink]] kind = \"print\"";
            return Err(self.missing("sink", "at least one [[sink]] table", hint));
        }
        let step_starts: Vec<usize> = f.step.iter().map(|s| s.span.start).collect();
        let mut sinks = Vec::new();
        for (i, raw) in f.sink.iter().enumerate() {
            let path = format!("sink[{i}]");
            let item = self.item(&path, raw);
            sinks.push(self.sink(&item, &nodes, f.source.len(), &step_starts)?);
        }
        Ok(Pipeline {
            file: self.src.file.to_string(),
            settings,
            nodes,
            sinks,
        })
    }

    /// The one stream-name rule (`crate::names`): a source's id names its
    /// log directory and every id names operator state, so it must be a
    /// plain name.
    fn check_stream_name(
        &self,
        item: &Item<'_>,
        id: &str,
        span: Range<usize>,
    ) -> Result<(), ConfigError> {
        match crate::names::validate_stream_name(id) {
            Ok(()) => Ok(()),
            Err(e) => Err(item.err(
                span,
                ID.name,
                "a plain name: ASCII letters, digits, `_` or `-`, starting with a letter or digit",
                Some(format!("\"{id}\"")),
                format!("{e}; it names the operator's state and, for a source, its log directory"),
            )),
        }
    }

    /// `id` is a plain name that no other source, step or step name has.
    fn unique_id(
        &self,
        ids: &mut HashSet<String>,
        item: &Item<'_>,
        id: &str,
        span: Range<usize>,
    ) -> Result<(), ConfigError> {
        self.check_stream_name(item, id, span.clone())?;
        if !ids.insert(id.to_string()) {
            return Err(item.err(
                span,
                ID.name,
                "an id used by no other source, step or step name",
                Some(format!("\"{id}\" a second time")),
                "give this one another id",
            ));
        }
        Ok(())
    }

    /// The entry of `table` that `chosen` (the value of `selector`)
    /// names; refuses keys it does not take and checks their types.
    fn entry<E: Entry>(
        &self,
        item: &Item<'_>,
        table: &'static [E],
        (selector, common): (&KeySpec, &[KeySpec]),
        chosen: &Spanned<&str>,
    ) -> Result<&'static E, ConfigError> {
        let spec = find(table, chosen.get_ref()).ok_or_else(|| {
            let key = item.key(selector.name);
            let all = entry_names(table);
            self.src
                .unknown_name(chosen.span(), key, chosen.get_ref(), &all)
        })?;
        let what = format!("{} = \"{}\"", selector.name, spec.name());
        item.only_keys(&what, &names(common), spec.keys())?;
        item.check_types(spec.keys())?;
        Ok(spec)
    }

    fn source(&self, item: &Item<'_>) -> Result<SourceDef, ConfigError> {
        let id = item.required(
            &ID,
            "an `id`",
            "add id = \"...\"; batches record their input under it, so keep it stable",
        )?;
        let kind = item.required(&KIND, "a `kind`", "add kind = \"generator\"")?;
        let spec = self.entry(item, SOURCES, (&KIND, SOURCE_COMMON), &kind)?;
        Ok(SourceDef {
            id: id.get_ref().to_string(),
            kind: (spec.build)(item, self.base)?,
        })
    }

    /// The index of the node `from` names, or `default`.
    fn input_of(
        &self,
        item: &Item<'_>,
        nodes: &[Node],
        default: Option<usize>,
    ) -> Result<usize, ConfigError> {
        match item.text(&FROM)? {
            Some(f) => node_of(item, nodes, f.span(), f.get_ref()),
            None => default.ok_or_else(|| no_from(item)),
        }
    }

    /// The nodes a step's `from` names (one, or a list), or `default`.
    fn inputs_of(
        &self,
        item: &Item<'_>,
        nodes: &[Node],
        default: Option<usize>,
    ) -> Result<Vec<usize>, ConfigError> {
        let Some(f) = item.names(&STEP_FROM)? else {
            return Ok(vec![default.ok_or_else(|| no_from(item))?]);
        };
        if f.get_ref().is_empty() {
            return Err(item.err(
                f.span(),
                FROM.name,
                "at least one id",
                Some("[]".into()),
                "name the stream it reads",
            ));
        }
        let mut out = Vec::with_capacity(f.get_ref().len());
        for id in f.get_ref() {
            let n = node_of(item, nodes, f.span(), id)?;
            if out.contains(&n) {
                return Err(item.err(
                    f.span(),
                    FROM.name,
                    "each id once",
                    Some(format!("\"{id}\" twice")),
                    "a stream is one table; name it once",
                ));
            }
            out.push(n);
        }
        Ok(out)
    }

    fn step(&self, item: &Item<'_>, index: usize, nodes: &[Node]) -> Result<StepDef, ConfigError> {
        let hint = format!("add op = \"...\", one of {}", op_names().join(", "));
        let op = item.required(&OP, "an `op`", &hint)?;
        let default = match nodes.last() {
            Some(Node::Step(_)) => Some(nodes.len() - 1),
            _ if nodes.len() == 1 => Some(0),
            _ => None,
        };
        let inputs = self.inputs_of(item, nodes, default)?;
        let spec = self.entry(item, OPS, (&OP, STEP_COMMON), &op)?;
        let input = inputs[0];
        if inputs.len() > 1 && spec.name != "sql" {
            let span = item
                .raw
                .get(STEP_FROM.name)
                .map_or(item.span(), |v| v.span());
            return Err(item.err(
                span,
                FROM.name,
                format!("one id for op = \"{}\"", spec.name),
                Some(format!("{} ids", inputs.len())),
                "only op = \"sql\" reads several streams (a join); union them upstream otherwise",
            ));
        }
        let all: Vec<Input<'_>> = inputs
            .iter()
            .map(|&i| Input::new(item, nodes, i, &OP, &op))
            .collect();
        let reads = &all[0];
        for r in &all {
            r.needs(spec.inputs, spec.input_hint)?;
        }
        let built = (spec.build)(&StepIn {
            item,
            input: reads,
            also: &all[1..],
            interval_ms: self.interval_ms,
            base: self.base,
        })?;
        let name = item.string(&NAME)?;
        let id = match item.string(&ID)? {
            Some(id) => id,
            None if spec.stateful && name.is_none() => return Err(item.err(
                op.span(),
                ID.name,
                "an `id` (or `name`) on a stateful step",
                Some("nothing".into()),
                "its state is kept under this name across restarts; add id = \"...\" and keep it",
            )),
            None => format!("step{index}"),
        };
        Ok(StepDef {
            name: name.unwrap_or_else(|| id.clone()),
            id,
            input,
            also: inputs[1..].to_vec(),
            op: built,
            kind: spec.output.of(reads.kind),
        })
    }

    fn sink(
        &self,
        item: &Item<'_>,
        nodes: &[Node],
        sources: usize,
        step_starts: &[usize],
    ) -> Result<SinkDef, ConfigError> {
        let hint = format!("add kind = \"...\", one of {}", sink_names().join(", "));
        let kind = item.required(&KIND, "a `kind`", &hint)?;
        // The step just above in the file (steps and sinks are separate
        // arrays in TOML; their positions tell the order).
        let above = step_starts
            .iter()
            .rposition(|&start| start < item.span().start)
            .map(|i| sources + i);
        let default = above.or((sources == 1).then_some(0));
        let input = self.input_of(item, nodes, default)?;
        let spec = self.entry(item, SINKS, (&KIND, SINK_COMMON), &kind)?;
        let reads = Input::new(item, nodes, input, &KIND, &kind);
        reads.needs(spec.inputs, spec.input_hint)?;
        Ok(SinkDef {
            input,
            kind: (spec.build)(&SinkIn {
                item,
                input: reads.kind,
                base: self.base,
            })?,
        })
    }
}

/// `from` missing where no default applies.
fn no_from(item: &Item<'_>) -> ConfigError {
    item.err(
        item.span(),
        FROM.name,
        "`from`, the id of the stream it reads",
        Some("nothing".into()),
        "add from = \"<id>\" (it defaults to the [[step]] just above, or to the only source)",
    )
}

/// The index of the node with id `id` (named at `span`).
fn node_of(
    item: &Item<'_>,
    nodes: &[Node],
    span: Range<usize>,
    id: &str,
) -> Result<usize, ConfigError> {
    nodes.iter().position(|n| n.id() == id).ok_or_else(|| {
        let ids: Vec<&str> = nodes.iter().map(Node::id).collect();
        item.err(
            span,
            FROM.name,
            format!("the id of a source or an earlier step ({})", ids.join(", ")),
            Some(format!("\"{id}\"")),
            super::error::nearest(id, &ids).map_or_else(
                || "steps can only read what is declared above them".to_string(),
                |n| format!("did you mean \"{n}\"?"),
            ),
        )
    })
}

//! Is a rebuilt pipeline compatible with the state its checkpoint holds?
//!
//! Rules (stated in `docs/guarantees.md`):
//! - the batch interval must not change (batch times and windows depend on
//!   it);
//! - every stateful operator of the checkpoint must still exist under the
//!   same name, with the same kind and parameters (its state is keyed by that
//!   name and only means something for that operator);
//! - everything else may change: stateless operators and outputs may be
//!   added, removed or edited; a new stateful operator starts empty, as on a
//!   fresh start; the number of partitions may change (state is
//!   re-partitioned when loaded).
//!
//! Pure: compares two descriptions, does no I/O.

use crate::dstream::{OperatorDesc, PipelineDescription};

/// The changes that make `new` unable to use the state of `old`, each said
/// in one sentence naming the operator. Empty: compatible.
pub fn incompatibilities(old: &PipelineDescription, new: &PipelineDescription) -> Vec<String> {
    let mut out = Vec::new();
    if old.batch_interval_ms != new.batch_interval_ms {
        out.push(format!(
            "the batch interval changed from {} ms to {} ms",
            old.batch_interval_ms, new.batch_interval_ms
        ));
    }
    for o in old.operators.iter().filter(|o| o.stateful) {
        match new.operators.iter().find(|n| n.name == o.name) {
            None => out.push(format!(
                "stateful operator `{}` ({}) is gone from the pipeline; its state would be orphaned",
                o.name, o.kind
            )),
            Some(n) if n.kind != o.kind => out.push(format!(
                "operator `{}` changed from {} to {}",
                o.name, o.kind, n.kind
            )),
            Some(n) => param_changes(o, n, &mut out),
        }
    }
    out
}

fn param_changes(o: &OperatorDesc, n: &OperatorDesc, out: &mut Vec<String>) {
    if o.slide_ms != n.slide_ms {
        out.push(format!(
            "operator `{}` now produces every {} ms instead of every {} ms",
            o.name, n.slide_ms, o.slide_ms
        ));
    }
    for (k, v) in &o.params {
        match n.params.get(k) {
            Some(w) if w == v => {}
            Some(w) => out.push(format!(
                "operator `{}` parameter {k} changed from {v} to {w}",
                o.name
            )),
            None => out.push(format!(
                "operator `{}` lost its parameter {k} (was {v})",
                o.name
            )),
        }
    }
    for (k, w) in &n.params {
        if !o.params.contains_key(k) {
            out.push(format!(
                "operator `{}` gained the parameter {k} = {w}",
                o.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn op(name: &str, kind: &str, stateful: bool, params: &[(&str, &str)]) -> OperatorDesc {
        OperatorDesc {
            name: name.into(),
            kind: kind.into(),
            inputs: vec![],
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            slide_ms: 1000,
            stateful,
        }
    }

    fn desc(ops: Vec<OperatorDesc>) -> PipelineDescription {
        PipelineDescription {
            batch_interval_ms: 1000,
            partitions: 4,
            operators: ops,
            outputs: vec![],
        }
    }

    #[test]
    fn stateless_changes_are_compatible() {
        let old = desc(vec![
            op("m", "map", false, &[]),
            op("c", "update_state_by_key", true, &[]),
        ]);
        let new = desc(vec![
            op("f", "filter", false, &[]),
            op("c", "update_state_by_key", true, &[]),
            op("w", "window", true, &[("window_ms", "3000")]),
        ]);
        assert!(incompatibilities(&old, &new).is_empty());
    }

    #[test]
    fn each_stateful_change_is_named() {
        let old = desc(vec![
            op(
                "counts",
                "reduce_by_key_and_window",
                true,
                &[("window_ms", "3000")],
            ),
            op("gone", "update_state_by_key", true, &[]),
            op("kind", "update_state_by_key", true, &[]),
        ]);
        let mut new = desc(vec![
            op(
                "counts",
                "reduce_by_key_and_window",
                true,
                &[("window_ms", "6000")],
            ),
            op("kind", "window", true, &[]),
        ]);
        new.batch_interval_ms = 500;
        let c = incompatibilities(&old, &new);
        assert_eq!(c.len(), 4, "{c:?}");
        assert!(c[0].contains("1000 ms to 500 ms"));
        assert!(c[1].contains("`counts` parameter window_ms changed from 3000 to 6000"));
        assert!(c[2].contains("`gone`") && c[2].contains("orphaned"));
        assert!(c[3].contains("operator `kind` changed from update_state_by_key to window"));
    }
}

//! Stateful operators whose state is one value (a trained model): each
//! batch computes the next value from the committed one and the batch,
//! emits it once, and commits it under the operator's name like any
//! keyed state (one key, `0u8`), so it is restored at restart, shown by
//! `weir checkpoint show` and dropped by `reset-operator`.
//!
//! Limits: one value per operator, at most `codec::DECODE_BYTES_MAX`
//! (64 MiB) encoded. Must never: change the committed value during a batch
//! (the next one goes out as a delta, applied only at commit).

use super::eval::{BatchCtx, PartFn};
use super::state::{KvDelta, KvState};
use super::window::Persist;
use super::{meta, DStream, Data, EngineError};

/// The one key the value is kept under.
const KEY: u8 = 0;

/// The function of a one-value operator: `(batch, operator name,
/// committed or initial value, the input's partitions) -> next value`.
pub(crate) type NextFn<T, S> =
    dyn Fn(&BatchCtx, &str, &S, &dyn PartFn<T>) -> Result<S, EngineError> + Send + Sync;

impl<T: Data> DStream<T> {
    /// A stateful operator of kind `kind` keeping one value: `next(ctx,
    /// value, input)` at every batch (empty ones included) from the
    /// committed value, or `initial` while none is committed. Emits the
    /// next value once per batch (in partition 0). `params` are recorded
    /// in the checkpoint's pipeline: a change refuses the start, as for
    /// every stateful operator.
    pub(crate) fn one_value_state<S: Data + Persist>(
        &self,
        kind: &'static str,
        params: Vec<(&'static str, String)>,
        initial: S,
        next: Box<NextFn<T, S>>,
    ) -> DStream<S> {
        let parent = self.s.clone();
        let out: DStream<S> = self.materialized(
            meta(kind, vec![self.id], self.slide_ms(), params),
            move |id| {
                move |ctx: &BatchCtx| {
                    let name = ctx.name(id).to_string();
                    let prev = ctx.state.get::<KvState<u8, S>>(&name)?;
                    let value = match prev.map(|p| p.iter().next()) {
                        Some(Some((_, v))) => v,
                        Some(None) | None => &initial,
                    };
                    let d = parent.prepare(ctx)?;
                    let v = next(ctx, &name, value, &*d)?;
                    ctx.check_reads()?;
                    ctx.push_delta(Box::new(KvDelta {
                        op: name,
                        partitions: ctx.partitions(),
                        changes: vec![(KEY, Some(v.clone()))],
                    }));
                    let mut parts: Vec<Vec<S>> =
                        (0..ctx.partitions()).map(|_| Vec::new()).collect();
                    if let Some(first) = parts.first_mut() {
                        first.push(v);
                    }
                    Ok(parts)
                }
            },
        );
        out.register_stateful::<u8, S>(self.slide_ms());
        out
    }
}

/// The function of [`DStream::map_parts_with_value`]: `(value, input's
/// partitions, partition) -> that partition's output`.
pub(crate) type WithValueFn<T, M, U> =
    dyn Fn(&M, &dyn PartFn<T>, usize) -> Result<Vec<U>, super::BoxError> + Send + Sync;

impl<T: Data> DStream<T> {
    /// Each partition of this stream mapped with the batch's value of
    /// `value` (a one-value stream such as [`Self::one_value_state`]'s, of
    /// the same slide): `f(value, input, partition)`, partitions in
    /// parallel. A batch in which `value` has no element, or in which `f`
    /// fails, fails naming the step.
    pub(crate) fn map_parts_with_value<M: Data, U: Data>(
        &self,
        value: &DStream<M>,
        kind: &'static str,
        f: Box<WithValueFn<T, M, U>>,
    ) -> DStream<U> {
        let (a, b) = (self.s.clone(), value.s.clone());
        let d = self.materialized(
            meta(kind, vec![self.id, value.id], self.slide_ms(), vec![]),
            move |id| {
                move |ctx: &BatchCtx| {
                    let step = || ctx.name(id).to_string();
                    let dv = b.prepare(ctx)?;
                    let values = ctx.collect(&*dv)?;
                    let Some(v) = values.iter().flatten().next() else {
                        return Err(EngineError::Step {
                            step: step(),
                            reason: "its model stream produced no model in this batch (weir's own error: please report it)".into(),
                        });
                    };
                    let da = a.prepare(ctx)?;
                    let parts = ctx.par_map(da.parts(), |p| f(v, &*da, p));
                    ctx.check_reads()?;
                    parts
                        .into_iter()
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|reason| EngineError::Step {
                            step: step(),
                            reason,
                        })
                }
            },
        );
        d.check_same_slide(value);
        d
    }
}

impl<T: Data> DStream<T> {
    /// The same stream, computed once per batch however many operators
    /// read it (a step with side effects per record, such as a drop
    /// counter, then runs once). Keeps the partitioning.
    pub(crate) fn computed_once(&self) -> DStream<T> {
        let parent = self.s.clone();
        self.materialized(
            meta("computed_once", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    ctx.collect(&*d)
                }
            },
        )
    }
}

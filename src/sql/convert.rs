//! Records to Arrow and back: the columns of a batch's table built from
//! JSON records (after the fit test) or from scalar records (one column,
//! `value`), and a query's result as one JSON object per row.
//!
//! Limits: none of its own (a partition of a batch is in memory already).
//! Must never: fail on a record that passed [`Columns::misfit`] (such
//! values become their column's value or NULL, never an error), or lose
//! an integer's exactness on the way out (Int64 and UInt64 stay JSON
//! integers; a float that is not finite becomes `null`).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef,
};
use datafusion::arrow::datatypes::{
    Float32Type, Float64Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{Map, Value};

use super::schema::{timestamp_ms, ColumnType, Columns};

/// One column of `rows`' field `name`, as type `ty`.
fn column(rows: &[Value], name: &str, ty: ColumnType) -> ArrayRef {
    fn field<'a>(r: &'a Value, name: &str) -> Option<&'a Value> {
        r.get(name).filter(|v| !v.is_null())
    }
    let get = |r| field(r, name);
    match ty {
        ColumnType::String => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
            rows.iter()
                .for_each(|r| b.append_option(get(r).and_then(Value::as_str)));
            Arc::new(b.finish())
        }
        ColumnType::Json => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
            for r in rows {
                match get(r) {
                    Some(Value::String(s)) => b.append_value(s),
                    Some(v) => b.append_value(v.to_string()),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::Bigint => {
            let mut b = Int64Builder::with_capacity(rows.len());
            rows.iter()
                .for_each(|r| b.append_option(get(r).and_then(Value::as_i64)));
            Arc::new(b.finish())
        }
        ColumnType::Double => {
            let mut b = Float64Builder::with_capacity(rows.len());
            rows.iter()
                .for_each(|r| b.append_option(get(r).and_then(Value::as_f64)));
            Arc::new(b.finish())
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            rows.iter()
                .for_each(|r| b.append_option(get(r).and_then(Value::as_bool)));
            Arc::new(b.finish())
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
            rows.iter()
                .for_each(|r| b.append_option(get(r).and_then(timestamp_ms)));
            Arc::new(b.finish())
        }
    }
}

/// A table of JSON records under `cols` (`schema` = `cols.arrow()`).
pub fn json_batch(
    rows: &[Value],
    cols: &Columns,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    debug_assert_eq!(cols.0.len(), schema.fields().len());
    let arrays: Vec<ArrayRef> = cols.0.iter().map(|(n, t)| column(rows, n, *t)).collect();
    RecordBatch::try_new(schema.clone(), arrays)
}

/// A one-column table (`value`, `Utf8`) of text records.
pub fn text_batch<'a>(
    texts: impl ExactSizeIterator<Item = &'a str>,
    schema: &SchemaRef,
) -> Result<RecordBatch, ArrowError> {
    let mut b = StringBuilder::with_capacity(texts.len(), texts.len() * 8);
    texts.for_each(|t| b.append_value(t));
    RecordBatch::try_new(schema.clone(), vec![Arc::new(b.finish())])
}

/// Every row of `batches` as a JSON object keyed by column name (its keys
/// come out sorted: serde_json's map is ordered by key).
pub fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Value>, ArrowError> {
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for b in batches {
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let cols: Vec<Vec<Value>> = b
            .columns()
            .iter()
            .map(|c| values(c.as_ref()))
            .collect::<Result<_, _>>()?;
        let mut iters: Vec<_> = cols.into_iter().map(Vec::into_iter).collect();
        for _ in 0..b.num_rows() {
            let mut row = Map::with_capacity(names.len());
            for (name, it) in names.iter().zip(iters.iter_mut()) {
                row.insert((*name).to_string(), it.next().unwrap_or(Value::Null));
            }
            out.push(Value::Object(row));
        }
    }
    Ok(out)
}

/// Pushes `f(i)` for every row, `null` where the array is null.
fn each<F: Fn(usize) -> Value>(a: &dyn Array, f: F) -> Vec<Value> {
    (0..a.len())
        .map(|i| if a.is_null(i) { Value::Null } else { f(i) })
        .collect()
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// One column's values as JSON: numbers, booleans and strings as
/// themselves, lists and structs nested, every other type as the text
/// Arrow displays it with (dates and timestamps in ISO 8601).
fn values(a: &dyn Array) -> Result<Vec<Value>, ArrowError> {
    Ok(match a.data_type() {
        DataType::Null => vec![Value::Null; a.len()],
        DataType::Boolean => each(a, |i| Value::Bool(a.as_boolean().value(i))),
        DataType::Int8 => each(a, |i| Value::from(a.as_primitive::<Int8Type>().value(i))),
        DataType::Int16 => each(a, |i| Value::from(a.as_primitive::<Int16Type>().value(i))),
        DataType::Int32 => each(a, |i| Value::from(a.as_primitive::<Int32Type>().value(i))),
        DataType::Int64 => each(a, |i| Value::from(a.as_primitive::<Int64Type>().value(i))),
        DataType::UInt8 => each(a, |i| Value::from(a.as_primitive::<UInt8Type>().value(i))),
        DataType::UInt16 => each(a, |i| Value::from(a.as_primitive::<UInt16Type>().value(i))),
        DataType::UInt32 => each(a, |i| Value::from(a.as_primitive::<UInt32Type>().value(i))),
        DataType::UInt64 => each(a, |i| Value::from(a.as_primitive::<UInt64Type>().value(i))),
        DataType::Float32 => each(a, |i| {
            float(f64::from(a.as_primitive::<Float32Type>().value(i)))
        }),
        DataType::Float64 => each(a, |i| float(a.as_primitive::<Float64Type>().value(i))),
        DataType::Utf8 => each(a, |i| Value::from(a.as_string::<i32>().value(i))),
        DataType::LargeUtf8 => each(a, |i| Value::from(a.as_string::<i64>().value(i))),
        DataType::Utf8View => each(a, |i| Value::from(a.as_string_view().value(i))),
        DataType::List(_) => lists(a, |i| a.as_list::<i32>().value(i))?,
        DataType::LargeList(_) => lists(a, |i| a.as_list::<i64>().value(i))?,
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let cols: Vec<Vec<Value>> = s
                .columns()
                .iter()
                .map(|c| values(c.as_ref()))
                .collect::<Result<_, _>>()?;
            each(a, |i| {
                let m: Map<String, Value> = fields
                    .iter()
                    .zip(&cols)
                    .map(|(f, c)| (f.name().clone(), c[i].clone()))
                    .collect();
                Value::Object(m)
            })
        }
        _ => {
            let fmt = ArrayFormatter::try_new(a, &FormatOptions::default())?;
            each(a, |i| Value::from(fmt.value(i).to_string()))
        }
    })
}

fn lists(a: &dyn Array, item: impl Fn(usize) -> ArrayRef) -> Result<Vec<Value>, ArrowError> {
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        out.push(if a.is_null(i) {
            Value::Null
        } else {
            Value::Array(values(item(i).as_ref())?)
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_rows_round_trip_through_arrow() {
        let cols = Columns::new(vec![
            ("s".into(), ColumnType::String),
            ("n".into(), ColumnType::Bigint),
            ("x".into(), ColumnType::Double),
            ("b".into(), ColumnType::Boolean),
            ("j".into(), ColumnType::Json),
            ("t".into(), ColumnType::Timestamp),
        ])
        .unwrap();
        let rows = vec![
            json!({"s": "a", "n": i64::MAX, "x": 1, "b": true, "j": {"k": [1]}, "t": 0}),
            json!({"other": 1}),
        ];
        let batch = json_batch(&rows, &cols, &cols.arrow()).unwrap();
        let back = rows_of(&[batch]).unwrap();
        assert_eq!(
            back[0],
            json!({"s": "a", "n": i64::MAX, "x": 1.0, "b": true, "j": "{\"k\":[1]}", "t": "1970-01-01T00:00:00Z"})
        );
        assert_eq!(
            back[1],
            json!({"s": null, "n": null, "x": null, "b": null, "j": null, "t": null})
        );
    }

    #[test]
    fn text_batch_is_one_value_column() {
        let schema = Columns::new(vec![("value".into(), ColumnType::String)])
            .unwrap()
            .arrow();
        let b = text_batch(["x", "y"].into_iter(), &schema).unwrap();
        assert_eq!(
            rows_of(&[b]).unwrap(),
            vec![json!({"value": "x"}), json!({"value": "y"})]
        );
    }
}

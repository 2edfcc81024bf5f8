//! The error of weir's streaming machine learning, [`MlError`].
//!
//! Owns: why a model update or prediction was refused, in the user's
//! words. Limits: a message names at most one offending value or index,
//! never input data beyond it. Must never: be produced by a panic path
//! (every variant is returned), or leave a model changed.

/// Why a model update or prediction was refused. The model passed in is
/// left exactly as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MlError {
    /// The model has no clusters, or no coordinates or features.
    #[error("the model is empty (no clusters or no features): give at least one cluster and one coordinate")]
    EmptyModel,
    /// `train_on` without an initial model: `what` says how to give one.
    #[error("the model has no initial {what}")]
    NoInitialModel {
        /// The builder calls that give it, in words.
        what: &'static str,
    },
    /// A vector had the wrong length.
    #[error("{what}{} has {found} values but the model has {expected}: every vector must have as many values as the model", at(.index))]
    DimensionMismatch {
        /// What the vector is (a batch point, a cluster center).
        what: &'static str,
        /// Its position in its list, when it belongs to one.
        index: Option<usize>,
        /// The model's dimension.
        expected: usize,
        /// The vector's length.
        found: usize,
    },
    /// `centers` and `weights` of a k-means model differ in length.
    #[error(
        "the model has {centers} cluster centers but {weights} weights: give one weight per center"
    )]
    WeightCountMismatch {
        /// Centers given.
        centers: usize,
        /// Weights given.
        weights: usize,
    },
    /// A NaN or infinite value where a finite one is required.
    #[error("{what}{} holds a value that is not a finite number (NaN or infinity): fix or filter it before the model", at(.index))]
    NonFinite {
        /// What holds it.
        what: &'static str,
        /// Its position, when it belongs to a list.
        index: Option<usize>,
    },
    /// A parameter outside its allowed range.
    #[error("{name} is {value}, but it must be {rule}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The range, in words.
        rule: &'static str,
    },
    /// A logistic-regression label other than 0 or 1 (Spark fails the batch).
    #[error("label {value} at position {index} is not 0 or 1, as logistic regression needs: map the labels to 0 and 1, or filter the others out")]
    InvalidLabel {
        /// Position in the batch.
        index: usize,
        /// The label.
        value: f64,
    },
    /// A size above one of the limits of [`super`].
    #[error("{what} is {value}, above weir's limit of {limit}: use a smaller model")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// Its count.
        value: usize,
        /// The limit.
        limit: usize,
    },
    /// The update produced NaN or infinity (overflow, or a step size that
    /// diverges); the model was not changed.
    #[error("the {what} became infinite or not a number; the model was left unchanged: lower the step size or scale the features")]
    Diverged {
        /// Which model.
        what: &'static str,
    },
}

fn at(index: &Option<usize>) -> String {
    match index {
        Some(i) => format!(" at position {i}"),
        None => String::new(),
    }
}

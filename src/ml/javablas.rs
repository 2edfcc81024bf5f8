//! Spark's low-level vector arithmetic, operation for operation: the JDK vector BLAS
//! (`dev.ludovic.netlib.blas.VectorBLAS` 3.0.3, as loaded by Spark 4.0.1 on JDK 17 with
//! `jdk.incubator.vector`), `Vectors.sqdist`/`Vectors.norm` for dense vectors, and the
//! `java.lang` helpers (`Math.max`, `Double.compare`) whose NaN / signed-zero rules
//! differ from Rust's.
//!
//! Limits: slices of any length; callers guarantee equal lengths (functions use the
//! shorter length rather than panic). Lane count is [`super::SPARK_VECTOR_LANES`].
//! Must never: use a fused multiply-add outside the full lane chunks where VectorBLAS
//! itself uses one, or change any summation order.

use super::SPARK_VECTOR_LANES as LANES;
use std::cmp::Ordering;

/// `VectorBLAS.ddotK` (unit strides): per-lane FMA accumulators over full chunks,
/// `reduceLanes(ADD)` in lane order starting from 0.0, then a plain scalar tail.
/// `AbstractBLAS.ddot` returns 0.0 for n <= 0.
pub(crate) fn ddot(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let bound = n - n % LANES;
    let mut acc = [0.0f64; LANES];
    let mut i = 0;
    while i < bound {
        for (l, a) in acc.iter_mut().enumerate() {
            *a = x[i + l].mul_add(y[i + l], *a);
        }
        i += LANES;
    }
    let mut sum = 0.0;
    for a in acc {
        sum += a;
    }
    for j in bound..n {
        sum += x[j] * y[j];
    }
    sum
}

/// `AbstractBLAS.daxpy` + `VectorBLAS.daxpyK`: `y += alpha * x`. Returns at once when
/// `alpha == 0.0` (also for -0.0), as netlib does; full chunks use `fma(alpha, x, y)`,
/// the tail `y + alpha * x` unfused.
pub(crate) fn daxpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    if alpha == 0.0 {
        return;
    }
    let n = x.len().min(y.len());
    let bound = n - n % LANES;
    for (j, (yj, xj)) in y.iter_mut().zip(x.iter()).enumerate().take(n) {
        if j < bound {
            *yj = alpha.mul_add(*xj, *yj);
        } else {
            *yj += alpha * *xj;
        }
    }
}

/// `VectorBLAS.dscalK`: `x *= alpha`, one plain multiply per element.
pub(crate) fn dscal(alpha: f64, x: &mut [f64]) {
    for v in x.iter_mut() {
        *v *= alpha;
    }
}

/// `Vectors.sqdist` for two dense vectors: `sum += (a_i - b_i)^2` in index order.
pub(crate) fn sqdist(a: &[f64], b: &[f64]) -> f64 {
    let mut sum = 0.0;
    for (x, y) in a.iter().zip(b.iter()) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// `Vectors.norm(v, 2.0)` for a dense vector: `sqrt(sum v_i * v_i)` in index order.
/// Also equals breeze's `norm(dv)` (`pow(sum pow(|v_i|, 2), 0.5)`: on JDK 17
/// `Math.pow(x, 2.0) == x * x` and `Math.pow(s, 0.5) == Math.sqrt(s)`, checked on 2 M
/// random values by `tests/fixtures/spark_ml/gen/MathCheck.java`).
pub(crate) fn norm2(v: &[f64]) -> f64 {
    let mut sum = 0.0;
    for x in v {
        sum += x * x;
    }
    sum.sqrt()
}

/// `java.lang.Math.max(double, double)`: NaN if either is NaN, and +0.0 > -0.0.
pub(crate) fn java_max(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        return a;
    }
    if a == 0.0 && b == 0.0 && a.to_bits() == (-0.0f64).to_bits() {
        return b;
    }
    if a >= b {
        a
    } else {
        b
    }
}

/// `java.lang.Double.compare`: a total order with -0.0 < +0.0 and every NaN equal to
/// every other NaN and above +infinity. (Scala 2.13's implicit `Ordering[Double]`,
/// used by `maxBy`/`minBy`, is this order.)
pub(crate) fn java_compare(a: f64, b: f64) -> Ordering {
    if a < b {
        return Ordering::Less;
    }
    if a > b {
        return Ordering::Greater;
    }
    let canon = |v: f64| -> i64 {
        if v.is_nan() {
            0x7ff8_0000_0000_0000
        } else {
            v.to_bits() as i64
        }
    };
    canon(a).cmp(&canon(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn hex(v: &serde_json::Value) -> f64 {
        let s = v.as_str().expect("hex string");
        f64::from_bits(u64::from_str_radix(s, 16).expect("hex"))
    }

    fn hexes(v: &serde_json::Value) -> Vec<f64> {
        v.as_array().expect("array").iter().map(hex).collect()
    }

    /// Compares with the real VectorBLAS outputs recorded by `tests/fixtures/spark_ml/gen/Check.java`.
    #[test]
    fn matches_recorded_java_vector_blas() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/spark_ml/java_vectorblas_lanes8.json");
        let text = std::fs::read_to_string(path).expect("fixture");
        let d: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(d["lanes"].as_u64(), Some(LANES as u64));
        let (mut cases, mut plain_dot_diff) = (0, 0);
        for c in d["cases"].as_array().expect("cases") {
            let (x, y, alpha) = (hexes(&c["x"]), hexes(&c["y"]), hex(&c["alpha"]));
            let dot = ddot(&x, &y);
            assert_eq!(dot.to_bits(), hex(&c["dot"]).to_bits(), "dot n={}", x.len());
            let plain: f64 = x.iter().zip(&y).fold(0.0, |s, (a, b)| s + a * b);
            plain_dot_diff += usize::from(plain.to_bits() != dot.to_bits());
            let mut z = y.clone();
            daxpy(alpha, &x, &mut z);
            for (got, want) in z.iter().zip(hexes(&c["axpy"])) {
                assert_eq!(got.to_bits(), want.to_bits(), "axpy n={}", x.len());
            }
            cases += 1;
        }
        assert_eq!(cases, 120);
        // The lane emulation matters: a plain loop would miss some of these.
        assert!(plain_dot_diff > 0);
    }

    #[test]
    fn java_max_and_compare_follow_java() {
        assert!(java_max(f64::NAN, 1.0).is_nan());
        assert!(java_max(1.0, f64::NAN).is_nan());
        assert_eq!(java_max(-0.0, 0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(java_max(0.0, -0.0).to_bits(), 0.0f64.to_bits());
        assert_eq!(java_compare(-0.0, 0.0), Ordering::Less);
        assert_eq!(java_compare(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(java_compare(-f64::NAN, f64::NAN), Ordering::Equal);
    }

    #[test]
    fn daxpy_zero_alpha_is_a_no_op() {
        let mut y = vec![-0.0, 1.0];
        daxpy(0.0, &[f64::INFINITY, 2.0], &mut y);
        assert_eq!(y[0].to_bits(), (-0.0f64).to_bits());
        assert_eq!(y[1], 1.0);
    }
}

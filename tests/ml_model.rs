//! The model arithmetic of `weir::ml` on its own: refused inputs (never a
//! panic, the model untouched), empty batches, the dying-cluster split,
//! half-life, SGD parameter rules, convergence timing, sampling and
//! prediction edge cases.

use weir::ml::kmeans::{self, KMeansModel, TimeUnit};
use weir::ml::sgd::{self, LinearModel, Loss, SgdParams};
use weir::ml::{MlError, CLUSTERS_MAX, ITERATIONS_MAX};

fn two_clusters() -> KMeansModel {
    KMeansModel {
        centers: vec![vec![0.0, 0.0], vec![10.0, 10.0]],
        weights: vec![3.0, 4.0],
    }
}

// ---------------------------------------------------------------- k-means

#[test]
fn kmeans_refuses_bad_dimensions_without_changing_the_model() {
    let mut m = two_clusters();
    let before = m.clone();
    let err = m
        .update(
            &[vec![1.0, 1.0], vec![1.0, 2.0, 3.0]],
            1.0,
            TimeUnit::Batches,
        )
        .unwrap_err();
    assert_eq!(
        err,
        MlError::DimensionMismatch {
            what: "batch point",
            index: Some(1),
            expected: 2,
            found: 3
        }
    );
    assert_eq!(m, before);
    assert!(matches!(
        m.predict(&[1.0]),
        Err(MlError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        m.nearest_distance(&[]),
        Err(MlError::DimensionMismatch { .. })
    ));

    let ragged = KMeansModel {
        centers: vec![vec![0.0, 0.0], vec![1.0]],
        weights: vec![1.0, 1.0],
    };
    assert!(matches!(
        ragged.predict(&[0.0, 0.0]),
        Err(MlError::DimensionMismatch { index: Some(1), .. })
    ));
    let counts = KMeansModel {
        centers: vec![vec![0.0]],
        weights: vec![1.0, 2.0],
    };
    assert_eq!(
        counts.predict(&[0.0]),
        Err(MlError::WeightCountMismatch {
            centers: 1,
            weights: 2
        })
    );
    let empty = KMeansModel {
        centers: vec![],
        weights: vec![],
    };
    assert_eq!(empty.predict(&[]), Err(MlError::EmptyModel));
    let zero_dim = KMeansModel {
        centers: vec![vec![]],
        weights: vec![1.0],
    };
    assert_eq!(zero_dim.predict(&[]), Err(MlError::EmptyModel));
}

#[test]
fn kmeans_refuses_non_finite_values_and_bad_decay() {
    let mut m = two_clusters();
    let before = m.clone();
    let nan_point = m.update(&[vec![f64::NAN, 0.0]], 1.0, TimeUnit::Batches);
    assert_eq!(
        nan_point,
        Err(MlError::NonFinite {
            what: "batch point",
            index: Some(0)
        })
    );
    for decay in [f64::NAN, -0.5, f64::INFINITY] {
        assert!(matches!(
            m.update(&[], decay, TimeUnit::Points),
            Err(MlError::InvalidParameter { name: "decay", .. })
        ));
    }
    assert_eq!(m, before);
    let mut bad = two_clusters();
    bad.weights[0] = -1.0;
    assert!(matches!(
        bad.predict(&[0.0, 0.0]),
        Err(MlError::InvalidParameter { .. })
    ));
    bad.weights[0] = f64::INFINITY;
    assert!(matches!(
        bad.predict(&[0.0, 0.0]),
        Err(MlError::NonFinite {
            what: "cluster weight",
            ..
        })
    ));
}

#[test]
fn kmeans_empty_batch_decays_per_batch_but_not_per_point() {
    let mut m = two_clusters();
    let info = m.update(&[], 0.5, TimeUnit::Batches).unwrap();
    assert_eq!((info.discount, info.points, info.split), (0.5, 0, None));
    assert_eq!(m.weights, vec![1.5, 2.0]);
    assert_eq!(m.centers, two_clusters().centers);

    let mut m = two_clusters();
    let info = m.update(&[], 0.5, TimeUnit::Points).unwrap();
    assert_eq!(info.discount, 1.0);
    assert_eq!(m, two_clusters());
}

#[test]
fn kmeans_points_unit_discounts_by_decay_to_the_batch_size() {
    let mut m = two_clusters();
    let info = m
        .update(
            &[vec![0.0, 1.0], vec![1.0, 0.0], vec![9.0, 9.0]],
            0.5,
            TimeUnit::Points,
        )
        .unwrap();
    assert_eq!(info.discount, 0.125);
    assert_eq!(m.weights, vec![3.0 * 0.125 + 2.0, 4.0 * 0.125 + 1.0]);
}

#[test]
fn kmeans_zero_weight_cluster_jumps_to_the_batch_mean() {
    let mut m = KMeansModel {
        centers: vec![vec![5.0, 5.0], vec![100.0, 100.0]],
        weights: vec![0.0, 0.0],
    };
    m.update(&[vec![1.0, 2.0], vec![3.0, 4.0]], 0.0, TimeUnit::Batches)
        .unwrap();
    // lambda = 2 / max(2, 1e-16) = 1: center * 0 + (1 / 2) * sum = the mean (2, 3).
    // Cluster 1 (weight 0 < 1e-8 * 2) is then dying, so cluster 0 is split into it.
    let mean = [0.5 * 4.0, 0.5 * 6.0];
    for (j, x) in mean.iter().enumerate() {
        let p = 1e-14 * f64::max(*x, 1.0);
        assert_eq!(m.centers[0][j], x + p);
        assert_eq!(m.centers[1][j], x - p);
    }
    assert_eq!(m.weights, vec![1.0, 1.0]);
}

#[test]
fn kmeans_split_rule_perturbs_largest_up_and_dying_down() {
    let mut m = KMeansModel {
        centers: vec![vec![1.0, -200.0, 0.25], vec![5.0, 5.0, 5.0]],
        weights: vec![10.0, 1e-10],
    };
    let info = m.update(&[], 1.0, TimeUnit::Batches).unwrap();
    let split = info.split.expect("split");
    assert_eq!((split.dying, split.split_from), (1, 0));
    assert_eq!((split.min_weight, split.max_weight), (1e-10, 10.0));
    let w = (10.0 + 1e-10) / 2.0;
    assert_eq!(m.weights, vec![w, w]);
    let p: [f64; 3] = [1e-14 * 1.0, 1e-14 * 200.0, 1e-14 * 1.0];
    let x: [f64; 3] = [1.0, -200.0, 0.25];
    for j in 0..3 {
        assert_eq!(m.centers[0][j].to_bits(), (x[j] + p[j]).to_bits());
        assert_eq!(m.centers[1][j].to_bits(), (x[j] - p[j]).to_bits());
    }
    assert!(info.split_happened());
}

#[test]
fn kmeans_split_takes_first_largest_and_first_smallest() {
    let c = |v: f64| vec![v, v];
    let mut m = KMeansModel {
        centers: vec![c(1.0), c(2.0), c(3.0), c(4.0)],
        weights: vec![0.0, 5.0, 0.0, 5.0],
    };
    let split = m
        .update(&[], 1.0, TimeUnit::Batches)
        .unwrap()
        .split
        .expect("split");
    assert_eq!((split.dying, split.split_from), (0, 1));
    assert_eq!(m.weights, vec![2.5, 2.5, 0.0, 5.0]);
    // All weights zero: 0 < 1e-8 * 0 is false, no split.
    let mut z = KMeansModel {
        centers: vec![c(1.0), c(2.0)],
        weights: vec![0.0, 0.0],
    };
    assert_eq!(z.update(&[], 1.0, TimeUnit::Batches).unwrap().split, None);
    // Exactly at the threshold is not dying.
    let mut t = KMeansModel {
        centers: vec![c(1.0), c(2.0)],
        weights: vec![1.0, 1e-8],
    };
    assert_eq!(t.update(&[], 1.0, TimeUnit::Batches).unwrap().split, None);
}

#[test]
fn decay_for_half_life_matches_spark_formula() {
    assert_eq!(kmeans::decay_for_half_life(1.0), (0.5f64.ln() / 1.0).exp());
    assert!((kmeans::decay_for_half_life(1.0) - 0.5).abs() < 1e-16);
    let d = kmeans::decay_for_half_life(10.0);
    assert!((d.powi(10) - 0.5).abs() < 1e-15);
    assert_eq!(kmeans::decay_for_half_life(f64::INFINITY), 1.0);
    for bad in [0.0, -3.0, f64::NAN] {
        assert!(kmeans::decay_for_half_life(bad).is_nan());
    }
    let mut m = two_clusters();
    assert!(m
        .update(&[], kmeans::decay_for_half_life(0.0), TimeUnit::Batches)
        .is_err());
}

#[test]
fn random_centers_are_deterministic_and_validated() {
    let a = kmeans::random_centers(3, 4, 2.5, 42).unwrap();
    let b = kmeans::random_centers(3, 4, 2.5, 42).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.centers.len(), 3);
    assert!(a
        .centers
        .iter()
        .all(|c| c.len() == 4 && c.iter().all(|x| x.is_finite())));
    assert_eq!(a.weights, vec![2.5; 3]);
    assert_ne!(a, kmeans::random_centers(3, 4, 2.5, 43).unwrap());
    assert_eq!(
        kmeans::random_centers(0, 4, 1.0, 1),
        Err(MlError::EmptyModel)
    );
    assert_eq!(
        kmeans::random_centers(2, 0, 1.0, 1),
        Err(MlError::EmptyModel)
    );
    assert!(matches!(
        kmeans::random_centers(CLUSTERS_MAX + 1, 1, 1.0, 1),
        Err(MlError::TooLarge { .. })
    ));
    assert!(matches!(
        kmeans::random_centers(10_000, 10_000, 1.0, 1),
        Err(MlError::TooLarge { .. })
    ));
    assert!(matches!(
        kmeans::random_centers(2, 2, -1.0, 1),
        Err(MlError::InvalidParameter { .. })
    ));
    assert!(matches!(
        kmeans::random_centers(2, 2, f64::NAN, 1),
        Err(MlError::NonFinite { .. })
    ));
}

#[test]
fn predict_takes_first_index_on_ties_and_returns_squared_distance() {
    let m = KMeansModel {
        centers: vec![vec![1.0, 1.0], vec![1.0, 1.0], vec![-1.0, -1.0]],
        weights: vec![1.0; 3],
    };
    assert_eq!(m.predict(&[1.0, 1.0]).unwrap(), 0);
    assert_eq!(m.predict(&[0.0, 0.0]).unwrap(), 0); // equidistant from all: first
    assert_eq!(m.nearest_distance(&[-1.0, -4.0]).unwrap(), (2, 9.0));
}

/// Spark's bounds and statistics never change the answer when there is a clear
/// winner: compare both of Spark's search paths (statistics for k = 50, none for
/// k = 1000) with a naive argmin on pseudo-random points.
#[test]
fn spark_search_paths_agree_with_naive_argmin() {
    for (k, dim) in [(50usize, 3usize), (1000, 2)] {
        let m = kmeans::random_centers(k, dim, 1.0, 7).unwrap();
        let probe = kmeans::random_centers(300, dim, 1.0, 8).unwrap();
        let predictor = m.predictor().unwrap();
        for p in &probe.centers {
            let sq = |c: &Vec<f64>| c.iter().zip(p).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
            let mut best = (0, f64::INFINITY);
            for (i, c) in m.centers.iter().enumerate() {
                if sq(c) < best.1 {
                    best = (i, sq(c));
                }
            }
            assert_eq!(predictor.predict(p).unwrap(), best.0, "k={k}");
        }
    }
}

#[test]
fn errors_read_as_plain_words() {
    let e = MlError::DimensionMismatch {
        what: "batch point",
        index: Some(4),
        expected: 3,
        found: 2,
    };
    assert_eq!(
        e.to_string(),
        "batch point at position 4 has 2 values but the model has 3: every vector must have as many values as the model"
    );
    let e = MlError::InvalidParameter {
        name: "step size",
        value: 0.0,
        rule: "a finite number above 0",
    };
    assert_eq!(
        e.to_string(),
        "step size is 0, but it must be a finite number above 0"
    );
    assert!(MlError::Diverged {
        what: "regression weights"
    }
    .to_string()
    .contains("left unchanged"));
}

// ---------------------------------------------------------------- SGD

fn line_batch() -> Vec<(f64, Vec<f64>)> {
    (0..20)
        .map(|i| {
            let x = i as f64 / 10.0;
            (2.0 * x - 1.0, vec![x, 1.0])
        })
        .collect()
}

#[test]
fn sgd_defaults_are_sparks() {
    assert_eq!(
        SgdParams::default(),
        SgdParams {
            step_size: 0.1,
            num_iterations: 50,
            mini_batch_fraction: 1.0,
            convergence_tol: 0.001
        }
    );
}

#[test]
fn sgd_refuses_bad_parameters() {
    let ok = SgdParams::default();
    let cases = [
        SgdParams {
            step_size: 0.0,
            ..ok
        },
        SgdParams {
            step_size: -1.0,
            ..ok
        },
        SgdParams {
            step_size: f64::NAN,
            ..ok
        },
        SgdParams {
            step_size: f64::INFINITY,
            ..ok
        },
        SgdParams {
            mini_batch_fraction: 0.0,
            ..ok
        },
        SgdParams {
            mini_batch_fraction: 1.5,
            ..ok
        },
        SgdParams {
            convergence_tol: -0.1,
            ..ok
        },
        SgdParams {
            convergence_tol: 1.5,
            ..ok
        },
        SgdParams {
            num_iterations: ITERATIONS_MAX + 1,
            ..ok
        },
    ];
    for p in cases {
        let mut m = LinearModel {
            weights: vec![0.0, 0.0],
            intercept: 0.0,
        };
        assert!(
            sgd::train_batch(&mut m, &line_batch(), &p, Loss::Squared, 0).is_err(),
            "{p:?}"
        );
        assert_eq!(m.weights, vec![0.0, 0.0]);
    }
}

#[test]
fn sgd_refuses_bad_points_without_changing_the_model() {
    let mut m = LinearModel {
        weights: vec![0.5, 0.5],
        intercept: 0.0,
    };
    let mut batch = line_batch();
    batch[7].1.push(1.0);
    let err =
        sgd::train_batch(&mut m, &batch, &SgdParams::default(), Loss::Squared, 0).unwrap_err();
    assert_eq!(
        err,
        MlError::DimensionMismatch {
            what: "feature vector",
            index: Some(7),
            expected: 2,
            found: 3
        }
    );
    let mut batch = line_batch();
    batch[3].0 = f64::NAN;
    assert!(sgd::train_batch(&mut m, &batch, &SgdParams::default(), Loss::Squared, 0).is_err());
    let logistic = vec![(1.0, vec![1.0, 0.0]), (0.5, vec![0.0, 1.0])];
    let err =
        sgd::train_batch(&mut m, &logistic, &SgdParams::default(), Loss::Logistic, 0).unwrap_err();
    assert_eq!(
        err,
        MlError::InvalidLabel {
            index: 1,
            value: 0.5
        }
    );
    assert_eq!(m.weights, vec![0.5, 0.5]);
    assert!(matches!(
        sgd::predict(&m, &[1.0], Loss::Squared),
        Err(MlError::DimensionMismatch { .. })
    ));
    let empty = LinearModel {
        weights: vec![],
        intercept: 0.0,
    };
    assert_eq!(
        sgd::predict(&empty, &[], Loss::Squared),
        Err(MlError::EmptyModel)
    );
}

#[test]
fn sgd_empty_batch_and_zero_iterations_change_nothing() {
    let mut m = LinearModel {
        weights: vec![0.5, -0.5],
        intercept: 1.0,
    };
    let info = sgd::train_batch(&mut m, &[], &SgdParams::default(), Loss::Squared, 0).unwrap();
    assert_eq!(info, sgd::SgdInfo::default());
    let p = SgdParams {
        num_iterations: 0,
        ..SgdParams::default()
    };
    let info = sgd::train_batch(&mut m, &line_batch(), &p, Loss::Squared, 0).unwrap();
    assert_eq!(info.iterations, 0);
    assert_eq!(
        m,
        LinearModel {
            weights: vec![0.5, -0.5],
            intercept: 1.0
        }
    );
}

#[test]
fn sgd_convergence_is_first_checked_after_the_second_update() {
    // tol = 1 makes the very first check succeed; it happens after update 2.
    let p = SgdParams {
        convergence_tol: 1.0,
        ..SgdParams::default()
    };
    let mut m = LinearModel {
        weights: vec![0.0, 0.0],
        intercept: 0.0,
    };
    let info = sgd::train_batch(&mut m, &line_batch(), &p, Loss::Squared, 0).unwrap();
    assert_eq!((info.iterations, info.converged), (2, true));
    // tol = 0 never converges: all iterations run.
    let p = SgdParams {
        convergence_tol: 0.0,
        num_iterations: 7,
        ..SgdParams::default()
    };
    let info = sgd::train_batch(&mut m, &line_batch(), &p, Loss::Squared, 0).unwrap();
    assert_eq!((info.iterations, info.converged), (7, false));
}

#[test]
fn sgd_intercept_is_kept_and_used_for_prediction() {
    let mut m = LinearModel {
        weights: vec![0.0, 0.0],
        intercept: 2.0,
    };
    sgd::train_batch(
        &mut m,
        &line_batch(),
        &SgdParams::default(),
        Loss::Squared,
        0,
    )
    .unwrap();
    assert_eq!(m.intercept, 2.0);
    let x = [1.0, 1.0];
    assert_eq!(
        sgd::predict(&m, &x, Loss::Squared).unwrap(),
        m.weights[0] * 1.0 + m.weights[1] * 1.0 + 2.0
    );
}

#[test]
fn sgd_diverging_step_is_reported_and_not_stored() {
    let p = SgdParams {
        step_size: 1e300,
        num_iterations: 20,
        ..SgdParams::default()
    };
    let mut m = LinearModel {
        weights: vec![0.0, 0.0],
        intercept: 0.0,
    };
    let err = sgd::train_batch(&mut m, &line_batch(), &p, Loss::Squared, 0).unwrap_err();
    assert_eq!(
        err,
        MlError::Diverged {
            what: "regression weights"
        }
    );
    assert_eq!(m.weights, vec![0.0, 0.0]);
}

#[test]
fn sgd_sampling_is_deterministic_per_seed() {
    let p = SgdParams {
        mini_batch_fraction: 0.5,
        convergence_tol: 0.0,
        ..SgdParams::default()
    };
    let run = |seed| {
        let mut m = LinearModel {
            weights: vec![0.0, 0.0],
            intercept: 0.0,
        };
        sgd::train_batch(&mut m, &line_batch(), &p, Loss::Squared, seed).unwrap();
        m
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let tiny = SgdParams {
        mini_batch_fraction: 1e-12,
        ..p
    };
    let mut m = LinearModel {
        weights: vec![0.0, 0.0],
        intercept: 0.0,
    };
    let info = sgd::train_batch(&mut m, &line_batch()[..1], &tiny, Loss::Squared, 3).unwrap();
    assert_eq!((info.iterations, info.empty_samples), (0, 50));
    assert_eq!(m.weights, vec![0.0, 0.0]);
}

#[test]
fn logistic_prediction_is_strictly_above_one_half() {
    let m = LinearModel {
        weights: vec![0.0, 0.0],
        intercept: 0.0,
    };
    assert_eq!(sgd::predict_probability(&m, &[3.0, -1.0]).unwrap(), 0.5);
    assert_eq!(sgd::predict(&m, &[3.0, -1.0], Loss::Logistic).unwrap(), 0.0);
    let m = LinearModel {
        weights: vec![1e-3, 0.0],
        intercept: 0.0,
    };
    assert_eq!(sgd::predict(&m, &[1.0, 0.0], Loss::Logistic).unwrap(), 1.0);
    let mut t = LinearModel {
        weights: vec![0.0, 0.0],
        intercept: 0.0,
    };
    let batch = vec![(1.0, vec![1.0, 0.5]), (-0.0, vec![-1.0, 0.5])];
    sgd::train_batch(&mut t, &batch, &SgdParams::default(), Loss::Logistic, 0).unwrap();
    assert_eq!(sgd::predict(&t, &[1.0, 0.0], Loss::Logistic).unwrap(), 1.0);
}

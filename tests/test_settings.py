"""Each setting against the direct computation it shortcuts."""

import numpy as np
import pytest
from sklearn.neighbors import KernelDensity

from model_collapse.errors import RunDirectoryError
from model_collapse.settings import SETTINGS
from model_collapse.settings.arrays import Samples, concatenate, gather
from model_collapse.settings.gaussian import Gaussian, GaussianConfig, GaussianDraws, GaussianModel
from model_collapse.settings.gaussian import _summary as gaussian_summary
from model_collapse.settings.kde import KDE, KDEConfig
from model_collapse.settings.linear_regression import LinearRegression, LinearRegressionConfig

rng = np.random.default_rng


def stacked_least_squares(setting, parts):
    """The obvious way: build the stacked design and labels, solve per seed."""
    weights = []
    for b in range(setting.seed_count):
        X = np.concatenate([setting.design[b][p["row"][b]] for p in parts])
        y = np.concatenate([p["y"][b] for p in parts])
        weights.append(np.linalg.lstsq(X, y, rcond=None)[0])
    return np.stack(weights)


def test_linear_regression_real_data_depend_only_on_the_seed():
    config = LinearRegressionConfig(dim=3, samples=12)
    alone = LinearRegression(config, [5])
    batch = LinearRegression(config, [2, 5, 9])
    np.testing.assert_array_equal(alone.design[0], batch.design[1])
    np.testing.assert_array_equal(alone.real_train["y"][0], batch.real_train["y"][1])
    assert not np.array_equal(batch.design[0], batch.design[1])


@pytest.mark.parametrize("dim", [4, 9, 12], ids=["T > d + 1", "T = d", "T < d (minimum norm)"])
def test_linear_regression_sufficient_statistics_equal_stacked_least_squares(dim):
    setting = LinearRegression(LinearRegressionConfig(dim=dim, samples=9, noise_variance=0.5), [0, 1, 2])
    rtol = 1e-10 if dim == 4 else 1e-7  # numpy's lstsq: the minimum-norm solution, through an SVD
    w1 = setting.fit([setting.real_train], rng(0))
    np.testing.assert_allclose(w1, stacked_least_squares(setting, [setting.real_train]), rtol=rtol)

    s2 = setting.sample(w1, 9, rng(1))
    s3 = setting.sample(w1, 23, rng(2))  # not a multiple of T: two copies of the design and a tail
    accumulated = [setting.real_train, s2, s3]
    np.testing.assert_allclose(setting.fit(accumulated, rng(0)), stacked_least_squares(setting, accumulated), rtol=rtol)

    rows = np.sort(rng(3).permuted(np.tile(np.arange(41), (3, 1)), axis=1)[:, :9], axis=1)
    subset = Samples.select(accumulated, rows)
    np.testing.assert_allclose(setting.fit([subset], rng(0)), stacked_least_squares(setting, [subset]), rtol=rtol)
    mixed = [subset, s2]
    np.testing.assert_allclose(setting.fit(mixed, rng(0)), stacked_least_squares(setting, mixed), rtol=rtol)


def test_linear_regression_sampling_relabels_the_fixed_design_with_fresh_noise():
    setting = LinearRegression(LinearRegressionConfig(dim=2, samples=6, noise_variance=4.0), [0, 1])
    weight = np.array([[1.0, -2.0], [0.5, 0.0]])
    data = setting.sample(weight, 4000 * 6, rng(0))
    assert data["y"].shape == (2, 24000)
    np.testing.assert_array_equal(data["row"][0, :13], np.arange(13) % 6)
    residual = data["y"] - np.take(setting._predict(weight), np.arange(24000) % 6, axis=1)
    assert abs(residual.var() - 4.0) < 0.1
    assert abs(residual.mean()) < 0.03
    metrics = setting.evaluate(weight)
    np.testing.assert_allclose(metrics["test_error"], ((weight - setting.true_weight) ** 2).sum(axis=1))


def test_gaussian_fit_is_the_mle_of_the_union_of_parts():
    setting = Gaussian(GaussianConfig(dim=3, samples=20, variance=2.0), [0, 1])
    model = setting.fit([setting.real_train], rng(0))
    s2 = setting.sample(model, 15, rng(1))
    s3 = setting.sample(model, 20, rng(2))
    parts = [setting.real_train, s2, s3]
    fitted = setting.fit(parts, rng(0))
    union = concatenate(parts)["x"]
    for b in range(2):
        np.testing.assert_allclose(fitted.mean[b], union[b].mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(fitted.covariance[b], np.cov(union[b], rowvar=False, bias=True), rtol=1e-10)


def test_gaussian_fit_stays_accurate_when_the_covariance_collapses():
    setting = Gaussian(GaussianConfig(dim=1, samples=10), [0])
    x = 3.0 + 1e-9 * rng(0).standard_normal((1, 10, 1))
    fitted = setting.fit([Samples(x=x[:, :5]), Samples(x=x[:, 5:])], rng(0))
    np.testing.assert_allclose(fitted.covariance[0, 0, 0], x[0, :, 0].var(), rtol=1e-6)


def test_gaussian_resolves_a_full_rank_covariance_of_condition_number_1e20():
    """Eigenvalues 1 and 1e-20: a covariance formed as a matrix loses the small one to rounding (its
    determinant then comes out 0 or negative); the square-root form keeps it."""
    setting = Gaussian(GaussianConfig(dim=2, samples=4000), [0])
    directions = np.linalg.qr(rng(3).standard_normal((2, 2)))[0]
    z = rng(4).standard_normal((1, 4000, 2)) * np.array([1.0, 1e-10])
    fitted = setting.fit([Samples(x=z @ directions.T)], rng(0))
    metrics = setting.evaluate(fitted)
    expected = np.log(np.prod(z[0].var(axis=0)))  # the sample variances along the two directions, to first order
    np.testing.assert_allclose(metrics["log_det_ratio"], [expected], rtol=1e-3)
    assert np.isfinite(metrics["test_nll"]).all() and metrics["det_ratio"][0] > 0
    formed = np.linalg.eigvalsh(np.cov(z[0] @ directions.T, rowvar=False, bias=True))
    assert abs(formed[0] - z[0, :, 1].var()) > 1e-3 * z[0, :, 1].var()  # what the matrix would have said


@pytest.mark.parametrize("regime", ["replace", "accumulate"])
def test_gaussian_fits_on_at_most_d_points_are_singular_for_every_seed(regime):
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime

    records = run_chain(Gaussian(GaussianConfig(dim=10, samples=10), range(200)), parse_regime(regime), 30)
    for record in records:
        assert (record.metrics["log_det_ratio"] == -np.inf).all()
        assert (record.metrics["det_ratio"] == 0).all() and (record.metrics["test_nll"] == np.inf).all()


def test_gaussian_full_rank_collapse_is_reported_finite_where_a_determinant_underflows():
    """d = 31, T = 100 under replace: by iteration 100 det(Sigma_hat) / det(Sigma_0) is about 1e-253 and
    the condition number about 1e13, yet every fit is of full rank."""
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime

    setting = Gaussian(GaussianConfig(dim=31, samples=100), range(200))
    last = run_chain(setting, parse_regime("replace"), 100)[-1].metrics
    assert np.isfinite(last["log_det_ratio"]).all() and np.isfinite(last["test_nll"]).all()
    assert (last["det_ratio"] > 0).all()
    assert -700 < last["log_det_ratio"].mean() < -450


@pytest.mark.parametrize("samples", [8, 3])  # n - 1 >= d, and n - 1 < d (a rank-deficient scatter)
def test_gaussian_draws_follow_one_law_whether_statistics_or_rows_come_first(samples):
    """A batch's statistics drawn directly (Bartlett), computed from rows drawn as rows, and computed from
    rows drawn after the statistics (Haar frame) follow one law; late rows have the early statistics."""
    from scipy.stats import ks_2samp

    seeds, d = 20000, 3
    root = np.triu(rng(5).standard_normal((d, d))) + 2 * np.eye(d)
    model = GaussianModel(np.tile([1.0, -2.0, 3.0], (seeds, 1)), np.tile(root, (seeds, 1, 1)))
    statistics_first = GaussianDraws(model, samples, rng(7))
    direct = statistics_first.summary()
    late_rows = statistics_first["x"]
    from_late_rows = gaussian_summary(Samples(x=late_rows))
    np.testing.assert_allclose(from_late_rows[1], direct[1], atol=1e-12)
    scatter = [r.transpose(0, 2, 1) @ r for r in (direct[2], from_late_rows[2])]
    np.testing.assert_allclose(scatter[1], scatter[0], atol=1e-10)

    rows_first = GaussianDraws(model, samples, rng(8))
    early_rows = rows_first["x"]
    from_early_rows = gaussian_summary(rows_first)
    laws = {
        "mean": lambda summary: summary[1][:, 1],
        "scatter trace": lambda summary: np.sum(summary[2] ** 2, axis=(1, 2)),
        "scatter (0, 2)": lambda summary: (summary[2].transpose(0, 2, 1) @ summary[2])[:, 0, 2],
    }
    for name, statistic in laws.items():
        assert ks_2samp(statistic(direct), statistic(from_early_rows)).pvalue > 1e-3, name
    for row, column in [(0, 0), (samples - 1, 2)]:
        assert ks_2samp(late_rows[:, row, column], early_rows[:, row, column]).pvalue > 1e-3
    covariance = root.T @ root
    np.testing.assert_allclose(np.cov(late_rows[:, 0].T), covariance, atol=0.05 * covariance.max())


def test_gaussian_metrics_on_known_models():
    setting = Gaussian(GaussianConfig(dim=2, samples=10, variance=1.0), [0, 1])
    means, covariances = np.array([[0.0, 0.0], [1.0, 2.0]]), np.stack([np.eye(2), np.diag([0.5, 2.0])])
    model = GaussianModel.from_covariance(means, covariances)
    metrics = setting.evaluate(model)
    np.testing.assert_allclose(metrics["mean_sq_error"], [0.0, 5.0])
    np.testing.assert_allclose(metrics["trace_ratio"], [1.0, 1.25])
    np.testing.assert_allclose(metrics["det_ratio"], [1.0, 1.0])
    np.testing.assert_allclose(metrics["log_det_ratio"], [0.0, 0.0], atol=1e-15)
    # E[-log N(x; m, C)] for x ~ N(0, I): 0.5 (d log 2pi + log det C + tr C^-1 + m^T C^-1 m)
    expected = 0.5 * (2 * np.log(2 * np.pi) + np.log(1.0) + (2 + 0.5) + (1 / 0.5 + 4 / 2.0))
    np.testing.assert_allclose(metrics["test_nll"], [np.log(2 * np.pi) + 1.0, expected])
    # and the formula agrees with a Monte-Carlo estimate on fresh real data
    x = rng(1).standard_normal((200000, 2))
    c = model.covariance[1]
    d = x - model.mean[1]
    mc = (
        0.5
        * (2 * np.log(2 * np.pi) + np.log(np.linalg.det(c)) + np.einsum("ni,ij,nj->n", d, np.linalg.inv(c), d)).mean()
    )
    assert abs(mc - expected) < 0.02


def test_gaussian_samples_follow_the_fitted_distribution():
    setting = Gaussian(GaussianConfig(dim=2, samples=10), [0])
    model = setting.fit([setting.real_train], rng(0))
    x = setting.sample(model, 100000, rng(1))["x"][0]
    np.testing.assert_allclose(x.mean(axis=0), model.mean[0], atol=0.02)
    np.testing.assert_allclose(np.cov(x, rowvar=False), model.covariance[0], atol=0.03)


@pytest.mark.parametrize("dataset", ["moons", "circles", "blobs", "swiss-roll"])
def test_kde_train_and_test_come_from_one_distribution(dataset):
    setting = KDE(KDEConfig(dataset=dataset, samples=2000, test_samples=2000), [0, 1])
    train, test = setting.real_train["x"], setting.test
    assert train.shape[-1] == test.shape[-1] == (3 if dataset == "swiss-roll" else 2)
    scale = train.std()
    np.testing.assert_allclose(train.mean(axis=1), test.mean(axis=1), atol=0.1 * scale)
    np.testing.assert_allclose(train.std(axis=1), test.std(axis=1), rtol=0.1)
    assert not np.array_equal(train[0], train[1])


def direct_kde_nll(points: np.ndarray, test: np.ndarray, bandwidth: float, kernel: str) -> float:
    """The mean test NLL of a kernel density, summed point by point in log space: the reference."""
    from scipy.special import gammaln, logsumexp

    dim = points.shape[1]
    squared = ((test[:, None, :] - points[None]) ** 2).sum(-1)
    if kernel == "gaussian":
        logs, log_norm = -squared / (2 * bandwidth**2), 0.5 * dim * np.log(2 * np.pi * bandwidth**2)
    else:
        with np.errstate(divide="ignore"):
            logs = np.log((squared < bandwidth**2).astype(float))
        log_norm = 0.5 * dim * np.log(np.pi) - gammaln(dim / 2 + 1) + dim * np.log(bandwidth)
    return -(logsumexp(logs, axis=1) - np.log(len(points)) - log_norm).mean()


@pytest.mark.parametrize("dataset", ["moons", "blobs", "swiss-roll"])
@pytest.mark.parametrize("kernel,bandwidth", [("gaussian", 0.1), ("gaussian", "scott"), ("tophat", 1.5)])
def test_kde_evaluation_is_exact_over_parts_of_a_training_set(dataset, kernel, bandwidth):
    setting = KDE(KDEConfig(dataset=dataset, samples=120, test_samples=90, kernel=kernel, bandwidth=bandwidth), [3, 4])
    synthetic = [setting.sample(setting.fit([setting.real_train], rng(i)), 70, rng(i)) for i in range(3)]
    for parts in ([setting.real_train], [setting.real_train, synthetic[0]], [setting.real_train, *synthetic]):
        model = setting.fit(parts, rng(0))
        nll = setting.evaluate(model)["test_nll"]
        for seed in range(2):
            exact = direct_kde_nll(model.points[seed], setting.test[seed], model.bandwidth, kernel)
            np.testing.assert_allclose(nll[seed], exact, rtol=1e-9)


def test_kde_agrees_with_scikit_learn_where_its_tree_is_exact():
    """Near the data scikit-learn's KernelDensity is exact; far from it (swiss roll at h = 0.1) its
    tree under-counts tails by up to 7% of the NLL, which is why the reference above is summed directly."""
    for bandwidth in (0.1, "scott", "silverman"):
        setting = KDE(KDEConfig(dataset="moons", samples=50, bandwidth=bandwidth), [0, 1])
        model = setting.fit([setting.real_train], rng(0))
        reference = KernelDensity(bandwidth=bandwidth).fit(setting.real_train["x"][1])
        assert model.bandwidth == pytest.approx(reference.bandwidth_, rel=1e-15)
        exact = -reference.score_samples(setting.test[1]).mean()
        np.testing.assert_allclose(setting.evaluate(model)["test_nll"][1], exact, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "tophat"])
def test_kde_samples_are_a_training_point_plus_kernel_noise(kernel):
    setting = KDE(KDEConfig(samples=3, bandwidth=0.2, kernel=kernel), [0])
    model = setting.fit([setting.real_train], rng(0))
    x = setting.sample(model, 60000, rng(1))["x"][0]
    points = setting.real_train["x"][0]
    nearest = np.argmin(((x[:, None] - points[None]) ** 2).sum(-1), axis=1)
    offsets = x - points[nearest]
    np.testing.assert_allclose(np.bincount(nearest) / len(x), 1 / 3, atol=0.01)  # points picked uniformly
    radius = np.linalg.norm(offsets, axis=1)
    if kernel == "gaussian":  # offsets ~ N(0, h^2 I): |offset|^2 / h^2 is chi-squared with 2 degrees
        np.testing.assert_allclose(offsets.mean(axis=0), 0, atol=0.005)
        np.testing.assert_allclose((radius**2).mean() / 0.2**2, 2, rtol=0.02)
    else:  # uniform in the disc of radius h: P(|offset| < r) = (r / h)^2
        assert radius.max() <= 0.2
        np.testing.assert_allclose((radius < 0.1).mean(), 0.25, atol=0.01)


def test_kde_blob_centres_are_drawn_once_per_seed_or_fixed():
    setting = KDE(KDEConfig(dataset="blobs", samples=3000, test_samples=3000), [0, 1])
    first, second = setting.centres
    assert first.shape == (3, 2) and not np.allclose(first, second) and np.abs(first).max() <= 10
    for seed, centres in enumerate(setting.centres):  # training, test and fresh data gather around them
        fresh = setting.fresh_real(3000, rng(2))["x"][seed]
        for data in (setting.real_train["x"][seed], setting.test[seed], fresh):
            nearest = np.min(((data[:, None] - centres[None]) ** 2).sum(-1), axis=1)
            assert np.mean(nearest) == pytest.approx(2.0, rel=0.1)  # E|N(0, I_2)|^2
    fixed = KDE(KDEConfig(dataset="blobs", centres=[(0, 0), (5, 5)]), [0, 1])
    assert all(np.array_equal(c, [[0, 0], [5, 5]]) for c in fixed.centres)


def test_kde_circles_follow_scikit_learns_factor():
    for factor in (0.8, 0.3):
        x = KDE(KDEConfig(dataset="circles", samples=4000, noise=0.0, factor=factor), [0]).real_train["x"][0]
        np.testing.assert_allclose(sorted(set(np.round(np.linalg.norm(x, axis=1), 9))), [factor, 1.0])


@pytest.mark.parametrize("name", ["linear-regression", "gaussian", "kde"])
def test_models_and_data_survive_a_save_and_load(name, tmp_path):
    setting = SETTINGS[name](SETTINGS[name].Config(samples=20), [0, 1])
    model = setting.fit([setting.real_train], rng(0))
    kind = type(setting.real_train)
    synthetic = setting.sample(model, 20, rng(1))
    data = kind.select([setting.real_train, synthetic], np.array([[0, 25, 39], [3, 4, 21]]))
    setting.save_model(model, tmp_path)
    data.save(tmp_path)
    (tmp_path / "synthetic").mkdir()
    synthetic.save(tmp_path / "synthetic")  # linear regression saves its labels alone: rows follow from T
    loaded = setting.load_model(tmp_path)
    for key, value in setting.evaluate(loaded).items():
        np.testing.assert_array_equal(value, setting.evaluate(model)[key])
    for saved, directory in [(data, tmp_path), (synthetic, tmp_path / "synthetic")]:
        back = kind.load(directory, like=setting.real_train)
        # a Gaussian batch drawn lazily is saved as its rows, and loads as rows
        assert type(back) is (Samples if isinstance(saved, GaussianDraws) else type(saved))
        for key in saved.fields:
            np.testing.assert_array_equal(back[key], saved[key])
    other = SETTINGS[name](SETTINGS[name].Config(samples=20), [0, 1, 2])
    with pytest.raises(RunDirectoryError):
        other.load_model(tmp_path)


def test_foreign_and_damaged_files_are_refused(tmp_path):
    setting = LinearRegression(LinearRegressionConfig(dim=2, samples=6), [0])
    (tmp_path / "model.npz").write_bytes(b"not an archive")
    with pytest.raises(RunDirectoryError, match="corrupted file"):
        setting.load_model(tmp_path)
    np.savez(tmp_path / "model.npz", mean=np.zeros(3))
    with pytest.raises(RunDirectoryError, match="not from this setting"):
        setting.load_model(tmp_path)


def test_gather_reads_rows_of_the_concatenation():
    a = Samples(x=np.arange(6).reshape(2, 3))
    b = Samples(x=np.arange(10, 18).reshape(2, 4))
    rows = np.array([[0, 3, 6], [2, 4, 5]])
    np.testing.assert_array_equal(gather([a, b], rows)["x"], [[0, 10, 13], [5, 15, 16]])
    with pytest.raises(IndexError):
        gather([a, b], np.array([[7], [0]]))


def test_discrete_simpson_diversity_follows_its_closed_form_under_replace():
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime
    from model_collapse.settings.discrete import Discrete, DiscreteConfig
    from model_collapse.theory import curves

    config = DiscreteConfig(outcomes=10, samples=20)
    records = run_chain(Discrete(config, range(4000)), parse_regime("replace"), 12)
    simulated = np.array([r.metrics["simpson_diversity"] for r in records])  # (iterations, seeds)
    [expected] = curves(config, "replace", 12)
    error = simulated.std(axis=1, ddof=1) / np.sqrt(simulated.shape[1])
    assert (np.abs(simulated.mean(axis=1) - expected.values) < 4 * error + 1e-12).all()
    # collapse: outcomes that reach probability 0 never return, and entropy falls
    zero = np.array([r.metrics["zero_outcomes"] for r in records])
    assert (np.diff(zero, axis=0) >= 0).all()
    assert np.mean([r.metrics["entropy"] for r in records][-1]) < np.mean(records[0].metrics["entropy"])


def test_discrete_accumulate_keeps_every_real_outcome_and_draws_no_impossible_one():
    from model_collapse.chain import run_chain
    from model_collapse.regimes import parse_regime
    from model_collapse.settings.discrete import Discrete, DiscreteConfig

    setting = Discrete(DiscreteConfig(outcomes=50, samples=30), range(50))
    records = run_chain(setting, parse_regime("accumulate"), 20)
    real_zero = 50 - np.array([len(np.unique(row)) for row in setting.real_train["x"]])
    np.testing.assert_array_equal(records[-1].metrics["zero_outcomes"], real_zero)
    model = np.zeros((50, 50))
    model[:, [3, 7]] = [0.25, 0.75]
    drawn = setting.sample(model, 1000, rng(0))["x"]
    assert set(np.unique(drawn)) == {3, 7} and abs((drawn == 7).mean() - 0.75) < 0.01


def test_mapped_samples_load_memory_mapped_and_refuse_what_does_not_fit(tmp_path):
    from model_collapse.settings.arrays import MappedSamples

    images = np.random.default_rng(0).integers(0, 256, size=(1, 5, 1, 4, 4), dtype=np.uint8)
    MappedSamples(x=images).save(tmp_path)
    back = MappedSamples.load(tmp_path, like=MappedSamples(x=images[:, :2]))
    assert isinstance(back["x"], np.memmap) and type(back) is MappedSamples  # read lazily from the file
    np.testing.assert_array_equal(back["x"], images)
    picked = MappedSamples.select([back, MappedSamples(x=images)], np.array([[9, 0, 4]]))
    assert type(picked) is MappedSamples and not isinstance(picked["x"], np.memmap)
    np.testing.assert_array_equal(picked["x"][0], images[0, [4, 0, 4]])
    with pytest.raises(RunDirectoryError, match="shape"):
        MappedSamples.load(tmp_path, like=MappedSamples(x=images[..., :2]))
    np.save(tmp_path / "x.npy", np.array([object()], dtype=object))
    with pytest.raises(RunDirectoryError, match="corrupted file"):
        MappedSamples.load(tmp_path, like=MappedSamples(x=images))


def test_the_gaussians_singularity_shortcut_decides_as_the_svd_does():
    """``singular`` skips the SVD of seeds its bound shows far from singular; near and at rank
    deficiency (n <= d, data at scales from 1e-8 to 1e8 and means far from 0) it must agree with it."""
    from model_collapse.settings.gaussian import _solve_each, singular

    rng = np.random.default_rng(0)
    decided = []
    for _ in range(200):
        d, seeds = int(rng.integers(1, 12)), 40
        n = int(rng.integers(max(1, d - 2), d + 5))
        x = rng.standard_normal((seeds, n, d)) * 10 ** rng.uniform(-8, 8)
        x += rng.standard_normal((seeds, 1, d)) * 10 ** rng.uniform(-3, 9)
        mean = x.mean(axis=1)
        r = np.linalg.qr(x - mean[:, None], mode="r")
        root = np.concatenate([r, np.zeros((seeds, d - r.shape[1], d))], axis=1) / np.sqrt(n)
        solved = _solve_each(root.transpose(0, 2, 1), mean, d)
        exact = singular(mean, root)
        assert np.array_equal(singular(mean, root, None if solved is None else solved[:, :, :d]), exact)
        decided.append(exact)
    decided = np.concatenate(decided)
    assert decided.any() and not decided.all()  # both kinds of seed were decided

"""Exact divergences (igm_cli/exact.py): closed forms against quadrature (1D) and Monte Carlo
(2D), the JS rows against an independent scipy computation, densities, and input checks."""

import math
from functools import reduce

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from igm_cli.errors import IgmError
from igm_cli.exact import (
    Gaussian,
    GaussianMixture,
    exact_value,
    monte_carlo_variance_finite,
)

CLOSED = ["kl", "reverse_kl", "pearson", "neyman", "squared_hellinger", "jeffrey"]
PAIRS_1D = [
    (Gaussian(0.3, 1.0), Gaussian(-0.2, 1.3)),
    (Gaussian(0.0, 10.0), Gaussian(0.0, 1.0)),  # P much wider: pearson infinite, KL = 47.2
    (Gaussian(1.0, 0.5), Gaussian(0.0, 1.0)),  # neyman infinite
    (Gaussian(-2.0, 1.5), Gaussian(1.0, 1.2)),
]
MIXTURE = GaussianMixture([0.3, 0.7], [-2.0, 1.0], [0.5, 1.0])


def ref_log_pdf(d, x):
    """log density of a 1D Gaussian or mixture from its parameters, independent of exact.py."""
    w, m, s = d._params()
    return reduce(np.logaddexp, [math.log(wk) - 0.5 * ((x - mk[0]) / sk[0]) ** 2
                                 - math.log(sk[0] * math.sqrt(2 * math.pi))
                                 for wk, mk, sk in zip(w, m, s)])


def scipy_integral(g, p, q):
    """∫ g(log p, log q) dx by scipy's quad over the bulk of both distributions."""
    def integrand(x):
        return g(ref_log_pdf(p, x), ref_log_pdf(q, x))

    return integrate.quad(integrand, -80, 80, points=[-5, -2, 0, 2, 5], limit=500,
                          epsabs=1e-13, epsrel=1e-12)[0]


@pytest.mark.parametrize("name", CLOSED + ["total_variation"])
@pytest.mark.parametrize("pair", range(len(PAIRS_1D)))
def test_closed_form_matches_quadrature_1d(name, pair):
    p, q = PAIRS_1D[pair]
    closed, method, _ = exact_value(name, p, q)
    assert method == "closed_form"
    numeric, method, _ = exact_value(name, p, q, method="quadrature")
    assert method == "quadrature"
    if math.isinf(closed):
        assert numeric > 1e3  # quadrature cannot see infinity, but sees a huge value
    else:
        assert numeric == pytest.approx(closed, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", CLOSED)
def test_closed_form_matches_monte_carlo_2d(name):
    """Scales close enough that every estimator has finite variance (relative standard error
    under 1% at 200k samples, measured over seeds); the tolerance is about 4 of them."""
    p = Gaussian([0.0, 0.5], [1.0, 0.9])
    q = Gaussian([0.3, 0.0], [1.1, 1.0])
    closed = exact_value(name, p, q).value
    mc, method, _ = exact_value(name, p, q, method="monte_carlo")
    assert method == "monte_carlo"
    assert mc == pytest.approx(closed, rel=0.03)


def test_closed_forms_sum_over_dimensions():
    p, q = Gaussian([0.0, 0.5], [1.0, 0.8]), Gaussian([0.3, 0.0], [1.2, 1.0])
    p1, q1 = Gaussian(0.0, 1.0), Gaussian(0.3, 1.2)
    p2, q2 = Gaussian(0.5, 0.8), Gaussian(0.0, 1.0)
    kl = exact_value("kl", p, q)[0]
    assert kl == pytest.approx(exact_value("kl", p1, q1)[0] + exact_value("kl", p2, q2)[0])
    bc = [1 - exact_value("squared_hellinger", a, b)[0] / 2 for a, b in ((p1, q1), (p2, q2))]
    assert exact_value("squared_hellinger", p, q)[0] == pytest.approx(2 * (1 - bc[0] * bc[1]))


@pytest.mark.parametrize("name, p, q", [
    ("pearson", Gaussian(0.0, 2.0), Gaussian(0.0, 1.0)),  # 2 s2² = 2 <= s1² = 4
    ("pearson", Gaussian([0.0, 0.0], [1.0, 1.5]), Gaussian([0.0, 0.0], [1.0, 1.0])),
    ("neyman", Gaussian(0.0, 1.0), Gaussian(5.0, 2.0)),  # 2 s1² = 2 <= s2² = 4
])
def test_infinite_chi_squared(name, p, q):
    assert exact_value(name, p, q) == (math.inf, "closed_form", None)


def test_equal_distributions_give_zero_or_the_gan_offset():
    p = Gaussian([0.2, -1.0], [0.7, 1.3])
    for name in CLOSED:
        assert exact_value(name, p, p)[0] == pytest.approx(0, abs=1e-12)
    assert exact_value("gan", p, p, n_samples=1000)[0] == pytest.approx(-math.log(4), rel=1e-12)


def test_method_selection():
    g1, g2 = Gaussian(0.0, 1.0), Gaussian([0.0, 0.0], [1.0, 1.0])
    assert exact_value("kl", g1, Gaussian(1.0, 2.0))[1] == "closed_form"
    assert exact_value("total_variation", g1, Gaussian(1.0, 2.0))[1] == "closed_form"
    assert exact_value("jensen_shannon", g1, Gaussian(1.0, 2.0))[1] == "quadrature"
    assert exact_value("kl", MIXTURE, g1)[1] == "quadrature"
    assert exact_value("total_variation", g2, Gaussian([1.0, 0.0], [1.0, 1.0]),
                       n_samples=1000)[1] == "monte_carlo"


@pytest.mark.parametrize("p, q", [PAIRS_1D[0], PAIRS_1D[3], (MIXTURE, Gaussian(0.0, 1.5))])
def test_js_rows_match_twice_jsd_by_kl_to_the_mixture(p, q):
    """2 JSD = KL(P||M) + KL(Q||M), M = (P + Q)/2, integrated by scipy; gan = 2 JSD - log 4."""
    def log_m(lp, lq):
        return np.logaddexp(lp, lq) - math.log(2)

    two_jsd = (scipy_integral(lambda lp, lq: np.exp(lp) * (lp - log_m(lp, lq)), p, q)
               + scipy_integral(lambda lp, lq: np.exp(lq) * (lq - log_m(lp, lq)), p, q))
    assert 0 < two_jsd < 2 * math.log(2)
    assert exact_value("jensen_shannon", p, q)[0] == pytest.approx(two_jsd, rel=1e-9)
    assert exact_value("gan", p, q)[0] == pytest.approx(two_jsd - math.log(4), rel=1e-9)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "total_variation", "squared_hellinger"])
def test_mixture_quadrature_matches_scipy(name):
    q = Gaussian(0.5, 1.5)
    pointwise = {
        "kl": lambda lp, lq: np.exp(lp) * (lp - lq),
        "reverse_kl": lambda lp, lq: np.exp(lq) * (lq - lp),
        "total_variation": lambda lp, lq: np.abs(np.exp(lp) - np.exp(lq)) / 2,
        "squared_hellinger": lambda lp, lq: (np.exp(lp / 2) - np.exp(lq / 2)) ** 2,
    }[name]
    value, method, _ = exact_value(name, MIXTURE, q)
    assert method == "quadrature"
    assert value == pytest.approx(scipy_integral(pointwise, MIXTURE, q), rel=1e-7)


def test_log_prob_matches_scipy():
    x = torch.linspace(-4, 4, 21, dtype=torch.float64)
    g = Gaussian([0.5, -1.0], [0.7, 2.0])
    xy = torch.stack([x, x.flip(0)], dim=-1)
    expected = stats.multivariate_normal([0.5, -1.0], np.diag([0.49, 4.0])).logpdf(xy.numpy())
    np.testing.assert_allclose(g.log_prob(xy).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(MIXTURE.log_prob(x[:, None]).numpy(),
                               ref_log_pdf(MIXTURE, x.numpy()), rtol=1e-12)
    assert g.dim == 2 and MIXTURE.dim == 1


def test_samples_have_the_right_moments():
    gen = torch.Generator().manual_seed(1)
    x = Gaussian([1.0, -2.0], [0.5, 3.0]).sample(100_000, gen)
    assert x.shape == (100_000, 2) and x.dtype == torch.float64
    torch.testing.assert_close(x.mean(0), torch.tensor([1.0, -2.0], dtype=torch.float64),
                               atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), torch.tensor([0.5, 3.0], dtype=torch.float64),
                               atol=0, rtol=0.01)
    m = MIXTURE.sample(100_000, gen)[:, 0]
    assert m.mean().item() == pytest.approx(0.3 * -2 + 0.7 * 1, abs=0.02)
    assert (m < -0.5).double().mean().item() == pytest.approx(
        0.3 * stats.norm.cdf(1.5 / 0.5) + 0.7 * stats.norm.cdf(-1.5), abs=0.01)


@pytest.mark.parametrize("build, message", [
    (lambda: Gaussian([0.0, 0.0], [1.0]), "Gaussian loc has 2 entries but scale has 1"),
    (lambda: Gaussian(0.0, 0.0), "Gaussian scale must be positive, got 0.0"),
    (lambda: Gaussian([0.0, 1.0], [1.0, -2.0]), "Gaussian scale must be positive, got -2.0"),
    (lambda: Gaussian(float("nan"), 1.0), "Gaussian loc must be a non-empty list of finite"),
    (lambda: Gaussian([], []), "Gaussian loc must be a non-empty list"),
    (lambda: GaussianMixture([0.5, 0.6], [0.0, 1.0], [1.0, 1.0]), "weights sum to 1.1, not 1"),
    (lambda: GaussianMixture([-0.5, 1.5], [0.0, 1.0], [1.0, 1.0]),
     "mixture weight must be non-negative, got -0.5"),
    (lambda: GaussianMixture([1.0], [0.0, 1.0], [1.0, 1.0]), "1 weights, 2 locs and 2 scales"),
    (lambda: GaussianMixture([0.5, 0.5], [0.0, 1.0], [1.0, 0.0]),
     "mixture component 1 scale must be positive, got 0.0"),
    (lambda: GaussianMixture([0.5, 0.5], [0.0, [1.0, 2.0]], [1.0, [1.0, 1.0]]),
     r"different dimensions \[1, 2\]"),
    (lambda: exact_value("kl", Gaussian([0.0, 0.0], [1.0, 1.0]), Gaussian(0.0, 1.0)),
     "P has dimension 2 but Q has dimension 1"),
    (lambda: exact_value("chi", Gaussian(0.0, 1.0), Gaussian(0.0, 1.0)), "unknown divergence"),
    (lambda: exact_value("gan", Gaussian(0.0, 1.0), Gaussian(0.0, 1.0), method="closed_form"),
     "method 'closed_form' is not available for gan"),
    (lambda: exact_value("kl", Gaussian([0.0, 0.0], [1.0, 1.0]),
                         Gaussian([0.0, 0.0], [1.0, 1.0]), method="quadrature"),
     "method 'quadrature' is not available"),
])
def test_bad_input_is_an_igm_error(build, message):
    with pytest.raises(IgmError, match=message):
        build()


def test_weights_within_tolerance_are_accepted():
    """Weights that sum to 1 up to 1e-6 (round-off in a config) are taken as given; further
    off is refused."""
    mixture = GaussianMixture([0.5, 0.5 + 5e-7], [0.0, 1.0], [1.0, 1.0])
    assert mixture.weights == [0.5, 0.5 + 5e-7]
    x = torch.linspace(-12, 13, 20001, dtype=torch.float64)[:, None]
    mass = torch.trapezoid(mixture.log_prob(x).exp(), x[:, 0]).item()
    assert mass == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(IgmError, match="sum to"):
        GaussianMixture([0.5, 0.5 + 1e-5], [0.0, 1.0], [1.0, 1.0])


# ----------------------------------------------------------------------------
# Monte Carlo: a standard error with every value, and no "exact" where the variance is infinite.

@pytest.mark.parametrize("name", CLOSED)
def test_monte_carlo_within_4_standard_errors(name):
    """The 2D pair above has finite variance for every f: the forced Monte Carlo value sits
    within 4 of its standard errors of the closed form, and the error is below 1 %."""
    p = Gaussian([0.0, 0.5], [1.0, 0.9])
    q = Gaussian([0.3, 0.0], [1.1, 1.0])
    closed = exact_value(name, p, q).value
    mc = exact_value(name, p, q, method="monte_carlo")
    assert mc.is_exact and 0 < mc.std_error < 0.01 * closed
    assert abs(mc.value - closed) < 4 * mc.std_error


def test_infinite_variance_is_flagged():
    """Neyman from N(0, 0.75²) to N(0, 1): finite (∫q²/p needs 2·0.75² > 1), but f(u)² ~ u^-2
    at u -> 0 and E_q[(p/q)^-2] = ∫p^-2 q³ needs -2/0.75² + 3 > 0, which fails. The sample
    standard error looks small and is wrong: it is reported infinite, and the value not exact.
    Measured when written: 0.527 with a sample standard error of 0.016 on 200k points, against
    the closed form 0.591 (4 of those "standard errors" away)."""
    p, q = Gaussian(0.0, 0.75), Gaussian(0.0, 1.0)
    closed = exact_value("neyman", p, q)
    mc = exact_value("neyman", p, q, method="monte_carlo")
    assert closed.is_exact and math.isfinite(closed.value)
    assert mc.std_error == math.inf and not mc.is_exact
    assert not monte_carlo_variance_finite("neyman", p, q)
    assert monte_carlo_variance_finite("neyman", Gaussian(0.0, 0.9), q)  # -2/0.81 + 3 > 0


@pytest.mark.parametrize("name, p, q, finite", [
    # Gaussians: exact criterion c/s_p² + (1-c)/s_q² > 0 in every dimension
    ("pearson", Gaussian(0.0, 1.0), Gaussian(0.0, 1.2), True),  # c = 4: 4 - 3/1.44 > 0
    ("pearson", Gaussian(0.0, 1.2), Gaussian(0.0, 1.0), False),  # 4/1.44 - 3 < 0; 1.44 < 2:
    # Pearson itself is finite
    ("jensen_shannon", Gaussian([0.0, 0.0], [1.0, 3.0]), Gaussian([0.0, 0.0], [1.0, 1.0]),
     False),  # bounded D_f, yet f(u) ~ u log 2 needs ∫p²/q: 2/9 - 1 < 0
    ("gan", Gaussian(0.0, 3.0), Gaussian(0.0, 1.0), True),  # f(u) ~ -log u: always finite
    ("reverse_kl", Gaussian(0.0, 9.0), Gaussian(0.0, 0.1), True),  # log² of a quadratic
    # mixtures: some component of Q must pass against every component of P (c > 1)
    ("jensen_shannon", Gaussian(0.0, 3.0),
     GaussianMixture([0.5, 0.5], [0.0, 0.0], [1.0, 3.0]), True),  # 2/9 - 1/9 > 0
    ("kl", GaussianMixture([0.5, 0.5], [0.0, 1.0], [1.0, 3.0]), Gaussian(0.0, 2.0), False),
    # ... and for c < 0 some component of P against every component of Q
    ("neyman", GaussianMixture([0.5, 0.5], [0.0, 0.0], [0.75, 1.0]), Gaussian(0.0, 1.0), True),
])
def test_variance_condition(name, p, q, finite):
    assert monte_carlo_variance_finite(name, p, q) is finite

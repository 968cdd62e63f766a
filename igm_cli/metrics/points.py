"""The metric families of low-dimensional data (toy sets, a user's points): each takes the
evaluation's data and generated points [n, d] and the data set, and returns {name: value}."""

from __future__ import annotations

from igm_cli.metrics import METRICS
from igm_cli.metrics.distances import mmd, w1
from igm_cli.metrics.manifold import ManifoldMetrics
from igm_cli.metrics.toy import mode_metrics

PRDC_BETTER = {"precision": "max", "recall": "max", "density": "max", "coverage": "max"}


@METRICS.register("modes", "mode coverage of a Gaussian mixture: modes hit, high-quality "
                  "fraction, KL to uniform (VEEGAN/PacGAN)", kind=("points",), needs_modes=True,
                  better={"modes": "max", "hq": "max", "kl_modes": "min"})
def modes(real, fake, dataset) -> dict:
    return mode_metrics(fake, dataset.centers, dataset.stds)


@METRICS.register("mmd", "unbiased MMD² between generated and data points (RBF kernels, "
                  "bandwidths 0.05 to 5)", kind=("points",), better={"mmd": "min"})
def mmd_metric(real, fake, dataset) -> dict:
    return {"mmd": mmd(fake, real)}


@METRICS.register("w1", "exact 1-Wasserstein distance between generated and data points "
                  "(optimal assignment)", kind=("points",), better={"w1": "min"})
def w1_metric(real, fake, dataset) -> dict:
    return {"w1": w1(fake, real)}


@METRICS.register("prdc", "precision/recall (Kynkäänniemi et al. 2019, k = 3) and density/"
                  "coverage (Naeem et al. 2020, k = 5) on k-NN balls: of points, or of image "
                  "features", kind=("points", "images"), better=PRDC_BETTER)
def prdc_metric(real, fake, context) -> dict:
    if hasattr(real, "manifold"):  # image features: the real radii are computed once per run
        return real.manifold.compute(fake.features)
    return ManifoldMetrics(real).compute(fake)

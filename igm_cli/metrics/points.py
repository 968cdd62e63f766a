"""The metric families of low-dimensional data (toy sets, a user's points): each takes the
evaluation's data and generated points [n, d] and the data set, and returns {name: value}."""

from __future__ import annotations

import functools

from igm_cli.metrics import METRICS
from igm_cli.metrics.distances import mmd, self_similarity, w1
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
    return {"mmd": mmd(fake, real, kyy=data_terms(real)[0])}


@METRICS.register("w1", "exact 1-Wasserstein distance between generated and data points "
                  "(optimal assignment)", kind=("points",), better={"w1": "min"})
def w1_metric(real, fake, dataset) -> dict:
    return {"w1": w1(fake, real)}


@METRICS.register("prdc", "precision/recall (Kynkäänniemi et al. 2019, k = 3) and density/"
                  "coverage (Naeem et al. 2020, k = 5) on k-NN balls: of points, or of image "
                  "features", kind=("points", "images"), better=PRDC_BETTER)
def prdc_metric(real, fake, context) -> dict:
    if hasattr(real, "manifold"):  # image features: the real radii are computed once per run
        from igm_cli.metrics.images import PRDC_SAMPLES

        return real.manifold.compute(fake.features[:PRDC_SAMPLES])
    return data_terms(real)[1].compute(fake)


@functools.lru_cache(maxsize=4)
def data_terms(real) -> tuple[float, ManifoldMetrics]:
    """What depends on the data sample alone, for a run's fixed evaluation sample (the same
    tensor at every evaluation, kept alive here so its id is not reused): MMD's data-data term,
    the data's k-NN radii. Cached by identity: the same numbers, 30 % less work per evaluation."""
    return self_similarity(real), ManifoldMetrics(real)

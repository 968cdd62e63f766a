"""The metric families of low-dimensional data (toy sets, a user's points): each takes the
evaluation's generated and data points [n, d] and the data set, and returns {name: value}."""

from __future__ import annotations

from igm_cli.metrics import METRICS
from igm_cli.metrics.distances import mmd, w1
from igm_cli.metrics.toy import mode_metrics


@METRICS.register("modes", "mode coverage of a Gaussian mixture: modes hit, high-quality "
                  "fraction, KL to uniform (VEEGAN/PacGAN)", kind="points", needs_modes=True,
                  better={"modes": "max", "hq": "max", "kl_modes": "min"})
def modes(fake, real, dataset) -> dict:
    return mode_metrics(fake, dataset.centers, dataset.stds)


@METRICS.register("mmd", "unbiased MMD² between generated and data points (RBF kernels, "
                  "bandwidths 0.05 to 5)", kind="points", better={"mmd": "min"})
def mmd_metric(fake, real, dataset) -> dict:
    return {"mmd": mmd(fake, real)}


@METRICS.register("w1", "exact 1-Wasserstein distance between generated and data points "
                  "(optimal assignment)", kind="points", better={"w1": "min"})
def w1_metric(fake, real, dataset) -> dict:
    return {"w1": w1(fake, real)}

"""k-nearest-neighbour manifold metrics of a generated sample set against a real one:
precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

Both papers estimate the support ("manifold") of a sample set as the union of balls around its
points, each ball reaching that point's k-th nearest neighbour in the same set:

    manifold(X) = ∪_i B(X_i, NND_k(X_i)),   B(x, r) = {y : ||y - x|| <= r},

where NND_k(X_i) is the distance from X_i to its k-th nearest neighbour among the OTHER points
of X. With real features X = {X_i}, i = 1..N, and generated features Y = {Y_j}, j = 1..M:

- precision = (1/M) Σ_j 1[Y_j ∈ manifold(X)]    (Kynkäänniemi et al., Eq. 1 and 2; k = 3)
- recall    = (1/N) Σ_i 1[X_i ∈ manifold(Y)]    (ibid.; k = 3)
- density   = (1/(kM)) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]   (Naeem et al., Sec. 3; k = 5)
- coverage  = (1/N) Σ_i 1[∃ j: Y_j ∈ B(X_i, NND_k(X_i))]      (ibid.; k = 5)

Precision and density measure fidelity (are the samples where the data is?), recall and
coverage diversity (is all of the data reached?); all four are higher-is-better. Density is
not bounded by 1: it counts how many real balls hold each sample, and its expectation is 1 when
X and Y are independent samples of one distribution (Naeem et al., Lemma 1); for identical
sets (Y = X) it is (k + 1) / k, since each X_i's ball holds itself and its k neighbours.
Coverage of two independent samples of one distribution has expectation
1 - Π_{i=1..k} (N - i) / (N + M - i) (ibid., Lemma 2): 1 - 2^-k for M = N → ∞.

All four are invariant to translating, rotating or scaling both sets together (they compare
distances with distances). The balls are closed (<=), as in Kynkäänniemi et al.'s code; the
prdc package of Naeem et al. uses <, which differs only on exact ties (duplicated points).

Features are [n, d] tensors or arrays: points for the toy sets, extractor features for images.
Distances are computed in row blocks, ||a||² + ||b||² - 2 a·b with one matrix product per block
(float64 input stays float64, anything else is float32), after subtracting the real mean from
both sets (no effect on distances, less cancellation). The radii, and the few distances that
the product cannot tell from a radius within its round-off, are computed directly in float64,
so that a point on a ball's edge (the k-th neighbour itself, a copy of a real point) is decided
the same way every time: identical sets give exactly the values above. Real radii can be
computed once and reused across evaluations with ``ManifoldMetrics``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from igm_cli.errors import IgmError

NAMES = ("precision", "recall", "density", "coverage")
BLOCK_ELEMENTS = 2**24  # entries of one block of the distance matrix (64 MB in float32)
TIE_SLACK = 1e-9  # relative: a float64 distance within this of a radius is on the ball's edge


def as_features(a, device=None) -> Tensor:
    """A detached [n, d] tensor: float64 stays float64, other dtypes become float32; [n] is
    [n, 1]; on ``device`` (default: where it is)."""
    t = torch.as_tensor(a).detach()
    t = t.to(device=device, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise IgmError(f"manifold metrics need features [n, d], got {list(t.shape)}")
    return t


def _rows_per_block(columns: int, block: int | None) -> int:
    return block or max(1, BLOCK_ELEMENTS // max(columns, 1))


class _Distances:
    """Squared distances between the rows of a block ``a`` and all rows of ``b``, screened by
    one matrix product ||a||² + ||b||² - 2 a·b, with ``tol`` a bound on its round-off
    (d · eps · (||a||² + ||b||²): the worst case of a length-d dot product)."""

    def __init__(self, a: Tensor, b: Tensor, b_sq: Tensor):
        self.a, self.b = a, b
        a_sq = a.pow(2).sum(1, keepdim=True)
        self.d2 = (a_sq + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)
        eps = torch.finfo(a.dtype).eps
        self.tol = (a_sq + b_sq[None, :]) * (a.shape[1] * eps)

    def within(self, r2: Tensor) -> Tensor:
        """1[||a_i - b_j|| <= r_ij] [len(a), len(b)] for squared radii ``r2`` (float64,
        broadcastable: [len(a), 1] or [1, len(b)]). Entries whose screened distance is within
        ``tol`` of the radius, such as a point on the edge of a ball through it, are decided
        on float64 differences Σ (a - b)², the way the radii are computed, so that ties are
        decided the same way whatever the block size or the matrix-product rounding."""
        r2_screen = r2.to(self.d2.dtype)
        inside = self.d2 <= r2_screen - self.tol
        i, j = ((self.d2 - r2_screen).abs() <= self.tol).nonzero(as_tuple=True)
        edge_r2 = r2.expand(self.d2.shape)[i, j]
        for chunk in range(0, len(i), max(1, BLOCK_ELEMENTS // self.a.shape[1])):
            part = slice(chunk, chunk + BLOCK_ELEMENTS // self.a.shape[1])
            exact = _paired_sq_distances(self.a[i[part]], self.b[j[part]])
            inside[i[part], j[part]] = exact <= edge_r2[part] * (1 + TIE_SLACK)
        return inside


def _paired_sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """Σ_d (a_i - b_i)² row by row, in float64."""
    return (a.double() - b.double()).pow(2).sum(1)


def _knn_sq_radii(x: Tensor, ks: tuple[int, ...], block: int | None) -> Tensor:
    """NND_k(x_i)² [n, len(ks)] in float64: neighbours found by the screened distances, each
    radius then computed directly as Σ (x_i - x_nn)² (see ``_Distances.within``)."""
    k_max = max(ks)
    if len(x) <= k_max:
        raise IgmError(f"manifold metrics need more than k = {k_max} points per set, "
                       f"got {len(x)}")
    x_sq = x.pow(2).sum(1)
    rows = _rows_per_block(len(x), block)
    out = []
    for start in range(0, len(x), rows):
        part = x[start:start + rows]
        d2 = _Distances(part, x, x_sq).d2
        own = torch.arange(len(part), device=x.device)
        d2[own, own + start] = float("inf")  # a point is not its own neighbour
        nearest = d2.topk(k_max, dim=1, largest=False).indices  # ascending distance
        out.append(torch.stack([_paired_sq_distances(part, x[nearest[:, k - 1]])
                                for k in ks], dim=1))
    return torch.cat(out)


@torch.no_grad()
def knn_radii(features, ks: int | tuple[int, ...] = 3, block: int | None = None) -> Tensor:
    """NND_k: the Euclidean distance from each point of ``features`` [n, d] to its k-th nearest
    neighbour among the other points (a duplicate of a point counts, at distance 0), float64.

    ``ks`` is one k (returns [n]) or a tuple of them (returns [n, len(ks)], one column each,
    from one pass). Needs n > max(ks)."""
    x = as_features(features)
    many = isinstance(ks, tuple)
    radii = _knn_sq_radii(x - x.mean(0), ks if many else (ks,), block).sqrt_()
    return radii if many else radii[:, 0]


class ManifoldMetrics:
    """Precision, recall (k = ``k_pr``), density and coverage (k = ``k_dc``) of generated
    features against the real features ``real`` [N, d], given once: the real radii NND_k are
    computed here and reused by every ``compute``. See the module text for the definitions.

    ``block``: rows of each block of the distance matrix (default: about 2^24 entries per
    block). Computations run on ``real``'s device."""

    def __init__(self, real, k_pr: int = 3, k_dc: int = 5, block: int | None = None):
        if k_pr < 1 or k_dc < 1:
            raise IgmError(f"manifold metrics need k >= 1, got k_pr={k_pr}, k_dc={k_dc}")
        self.k_pr, self.k_dc, self.block = k_pr, k_dc, block
        real = as_features(real)
        self.mean = real.mean(0)
        self.real = real - self.mean
        r2 = _knn_sq_radii(self.real, (k_pr, k_dc), block)
        self.real_r2_pr, self.real_r2_dc = r2[:, 0], r2[:, 1]

    @torch.no_grad()
    def compute(self, fake) -> dict[str, float]:
        """{'precision', 'recall', 'density', 'coverage'} of ``fake`` [M, d] (same d)."""
        y = as_features(fake, self.real.device).to(self.real.dtype)
        if y.shape[1] != self.real.shape[1]:
            raise IgmError(f"manifold metrics: generated features have {y.shape[1]} dimensions, "
                           f"real ones {self.real.shape[1]}")
        y = y - self.mean
        fake_r2 = _knn_sq_radii(y, (self.k_pr,), self.block)[:, 0]
        y_sq = y.pow(2).sum(1)
        fake_in_real = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        real_in_fake = covered = balls_holding = 0
        rows = _rows_per_block(len(y), self.block)
        for start in range(0, len(self.real), rows):
            d = _Distances(self.real[start:start + rows], y, y_sq)  # [rows, M]
            # Y_j in some real ball (precision), X_i in some generated ball (recall)
            fake_in_real |= d.within(self.real_r2_pr[start:start + rows, None]).any(0)
            real_in_fake += d.within(fake_r2[None, :]).any(1).sum().item()
            in_ball = d.within(self.real_r2_dc[start:start + rows, None])
            balls_holding += in_ball.sum().item()  # Σ_i Σ_j 1[Y_j ∈ B(X_i, NND_k(X_i))]
            covered += in_ball.any(1).sum().item()  # X_i's ball holds some Y_j
        n, m = len(self.real), len(y)
        return {
            "precision": fake_in_real.double().mean().item(),
            "recall": real_in_fake / n,
            "density": balls_holding / (self.k_dc * m),
            "coverage": covered / n,
        }


def manifold_metrics(real, fake, k_pr: int = 3, k_dc: int = 5,
                     block: int | None = None) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` [M, d] against ``real`` [N, d] in
    one call (see ``ManifoldMetrics``, which keeps the real radii for repeated evaluations)."""
    return ManifoldMetrics(real, k_pr, k_dc, block).compute(fake)

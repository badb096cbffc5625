"""Track-based motion metrics (pure numpy).

Both metrics compare two sets of point tracks ``(N, T, 2)`` / ``(M, T, 2)``
(see :mod:`motionmatcher.metrics.tracking` for conventions). The pairwise
``N x M`` terms are computed with matrix products in row chunks, so grid 50
(``N = M = 2500``) takes milliseconds and at most ``chunk_size * M`` floats of
scratch memory.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["motion_discrepancy", "motion_fidelity", "normalized_displacements",
           "DISCREPANCY_VARIANTS", "FIDELITY_VARIANTS"]

#: ``official``: the MotionMatcher evaluation script (mean over the flattened ``(T, 2)`` vector);
#: ``paper``: the paper's formula (sum over x and y), exactly 2x ``official``.
DISCREPANCY_VARIANTS = ("official", "paper")
#: ``official``: DMT's ``motion_fidelity_score.py`` (identity matrix subtracted before the max);
#: ``no_identity``: the same formula without that term (a video against itself scores 1).
FIDELITY_VARIANTS = ("official", "no_identity")

_DEFAULT_CHUNK = 512


def _check_tracks(tracks: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(tracks, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"{name} must be (N, T, 2), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} contains no tracks")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite positions")
    return arr


def motion_discrepancy(
    tracks_a: np.ndarray,
    tracks_b: np.ndarray,
    height: int,
    width: int,
    chunk_size: int = _DEFAULT_CHUNK,
    variant: str = "paper",
) -> float:
    """Motion discrepancy of the MotionMatcher paper (lower is better, 0 = same tracks).

    With tracks ``a_i(t)`` (``i = 1..N``) and ``b_j(t)`` (``j = 1..M``),
    ``t = 1..T``, the distance of two tracks is their mean squared Euclidean
    distance over time::

        d(a_i, b_j) = 1/T * sum_t ||a_i(t) - b_j(t)||_2^2      (sum over x and y)

    and the discrepancy is the symmetric nearest-neighbour (Chamfer) average,
    normalised by the frame area::

        D(A, B) = [ 1/N sum_i min_j d(a_i, b_j) + 1/M sum_j min_i d(a_i, b_j) ] / (H * W)

    Notes:
        * Both track sets must come from videos tracked at the *same* resolution
          ``H x W`` (resize both videos to a common size before tracking); the
          result is in units of (fraction of frame area). The official script
          compared 480-px reference tracks with 384-px sample tracks; we do not.
        * ``variant="paper"`` is the formula above. ``variant="official"`` is
          the official script (``evaluations/motion_discrepancy.py``), which
          averages the squared difference over the flattened ``(T, 2)`` vector,
          i.e. divides by ``2T``: exactly half of ``paper``; rankings are identical.
        * Visibility is ignored, as in the official script (lost points keep
          their last position).

    Args:
        tracks_a, tracks_b: ``(N, T, 2)`` and ``(M, T, 2)`` positions in pixels.
        height, width: the common frame size the tracks were computed at.
        chunk_size: rows of ``A`` processed per block (memory bound).
        variant: ``"paper"`` or ``"official"`` (:data:`DISCREPANCY_VARIANTS`).
    """
    if variant not in DISCREPANCY_VARIANTS:
        raise ValueError(f"unknown motion discrepancy variant {variant!r}; expected one of {DISCREPANCY_VARIANTS}")
    a = _check_tracks(tracks_a, "tracks_a")
    b = _check_tracks(tracks_b, "tracks_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"tracks must have the same number of frames, got {a.shape[1]} and {b.shape[1]}")
    if height <= 0 or width <= 0:
        raise ValueError(f"invalid frame size {height}x{width}")
    n_frames = a.shape[1]

    # Centre on a common origin to limit cancellation in ||a||^2 + ||b||^2 - 2 a.b
    origin = b.reshape(-1, 2).mean(axis=0)
    a_flat = (a - origin).reshape(a.shape[0], -1)
    b_flat = (b - origin).reshape(b.shape[0], -1)
    a_sq = np.einsum("nk,nk->n", a_flat, a_flat)
    b_sq = np.einsum("mk,mk->m", b_flat, b_flat)

    min_a = np.empty(a.shape[0])
    min_b = np.full(b.shape[0], np.inf)
    step = max(1, int(chunk_size))
    for start in range(0, a.shape[0], step):
        stop = min(start + step, a.shape[0])
        sq = a_sq[start:stop, None] + b_sq[None, :] - 2.0 * (a_flat[start:stop] @ b_flat.T)
        np.maximum(sq, 0.0, out=sq)
        min_a[start:stop] = sq.min(axis=1)
        np.minimum(min_b, sq.min(axis=0), out=min_b)

    coords = n_frames * (2 if variant == "official" else 1)
    score = (min_a.mean() + min_b.mean()) / coords / (float(height) * float(width))
    return float(score)


def normalized_displacements(tracks: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Unit per-step displacements ``u(t) = v(t) / ||v(t)||``, ``v(t) = p(t+1) - p(t)``.

    Steps with ``||v(t)|| <= eps`` px (a static point) are set to the zero
    vector instead of being divided by ~0, so they contribute 0 to any
    correlation. Returns ``(N, T-1, 2)`` float64.
    """
    p = np.asarray(tracks, dtype=np.float64)
    v = p[:, 1:] - p[:, :-1]
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    moving = norm > eps
    return np.where(moving, v / np.where(moving, norm, 1.0), 0.0)


def _max_correlation(u_rows: np.ndarray, u_cols: np.ndarray, chunk_size: int,
                     subtract_identity: bool = False) -> np.ndarray:
    """For each row track ``i``: ``max_j [1/(T-1) sum_t <u_rows_i(t), u_cols_j(t)> - delta_ij]``
    (``delta`` only with ``subtract_identity``)."""
    n_steps = u_rows.shape[1]
    rows = u_rows.reshape(u_rows.shape[0], -1)
    cols = u_cols.reshape(u_cols.shape[0], -1)
    best = np.empty(rows.shape[0])
    step = max(1, int(chunk_size))
    for start in range(0, rows.shape[0], step):
        stop = min(start + step, rows.shape[0])
        sim = (rows[start:stop] @ cols.T) / n_steps
        if subtract_identity:
            idx = np.arange(start, stop)
            sim[idx - start, idx] -= 1.0
        best[start:stop] = sim.max(axis=1)
    return best


def motion_fidelity(
    tracks_src: np.ndarray,
    tracks_gen: np.ndarray,
    min_motion: float = 0.0,
    symmetric: bool = False,
    eps: float = 1e-6,
    chunk_size: int = _DEFAULT_CHUNK,
    variant: str = "no_identity",
) -> float:
    """Motion fidelity score of DMT (Yatim et al., CVPR 2024); higher is better, in ``[-1, 1]``.

    With unit displacements ``u`` (:func:`normalized_displacements`; a step
    with zero motion normalises to the zero vector), the correlation of a
    source track ``s`` and a generated track ``g`` over ``T-1`` steps is::

        corr(s, g) = 1/(T-1) * sum_t <u_s(t), u_g(t)>

    and the score is, for each generated track, its best-matching source track,
    averaged over generated tracks (as in DMT's public ``motion_fidelity_score.py``)::

        F(S, G) = 1/|G| sum_{g in G} max_{s in S} corr(s, g)

    With ``symmetric=True`` the mean of ``F(S, G)`` and ``F(G, S)`` is returned.

    Static points: a step with ``||v|| <= eps`` contributes 0, so a track that
    never moves has correlation 0 with everything and a video compared with
    itself scores 1 only when every track moves at every step. DMT has no such
    guard (0/0 gives NaN) and instead optionally restricts the query grid to a
    foreground box. Here ``min_motion > 0`` drops tracks whose path length
    ``sum_t ||v(t)||`` is below ``min_motion`` px, from both sets, before
    matching (default 0 = keep all tracks, like DMT). If no source track
    survives the filter the score is undefined (NaN); if no generated track
    survives, the generated video has no motion and the score is 0.

    Variants (:data:`FIDELITY_VARIANTS`): ``"no_identity"`` is the formula
    above. ``"official"`` is DMT's script, which subtracts the identity matrix
    from the ``|G| x |S|`` similarity matrix before the max::

        F_official(S, G) = 1/|G| sum_g max_s [corr(s, g) - delta_{g s}]

    where ``delta`` pairs the tracks started from the same grid point. It needs
    ``|S| == |G|`` (same grid; DMT's script fails otherwise) and no
    ``min_motion`` filter. A video against itself then scores the mean
    second-best match (0.53 on DMT's example), not 1. DMT divides 0/0 for a
    static step (NaN); both variants here use the zero-vector guard above.

    Args:
        tracks_src: reference tracks ``(N, T, 2)``.
        tracks_gen: generated-video tracks ``(M, T, 2)``, same ``T`` and same
            tracking resolution as the source.
        variant: ``"no_identity"`` or ``"official"``.
    """
    if variant not in FIDELITY_VARIANTS:
        raise ValueError(f"unknown motion fidelity variant {variant!r}; expected one of {FIDELITY_VARIANTS}")
    src = _check_tracks(tracks_src, "tracks_src")
    gen = _check_tracks(tracks_gen, "tracks_gen")
    if src.shape[1] != gen.shape[1]:
        raise ValueError(f"tracks must have the same number of frames, got {src.shape[1]} and {gen.shape[1]}")
    if src.shape[1] < 2:
        raise ValueError("motion fidelity needs at least 2 frames")
    official = variant == "official"
    if official and (src.shape[0] != gen.shape[0] or min_motion > 0):
        raise ValueError(
            "motion fidelity variant 'official' (DMT's identity term) pairs tracks by grid index: it needs "
            f"the same number of source and generated tracks (got {src.shape[0]} and {gen.shape[0]}) "
            "and min_motion = 0"
        )

    u_src = normalized_displacements(src, eps)
    u_gen = normalized_displacements(gen, eps)
    if min_motion > 0:
        keep_src = _path_length(src) >= min_motion
        keep_gen = _path_length(gen) >= min_motion
        logger.debug(
            "motion_fidelity: kept %d/%d source and %d/%d generated tracks (min_motion=%g px)",
            keep_src.sum(), keep_src.size, keep_gen.sum(), keep_gen.size, min_motion,
        )
        if not keep_src.any():
            logger.warning("motion_fidelity: no source track moves >= %g px; score undefined (NaN)", min_motion)
            return float("nan")
        if not keep_gen.any():
            logger.info("motion_fidelity: no generated track moves >= %g px; score 0", min_motion)
            return 0.0
        u_src, u_gen = u_src[keep_src], u_gen[keep_gen]

    score = _max_correlation(u_gen, u_src, chunk_size, official).mean()
    if symmetric:
        score = 0.5 * (score + _max_correlation(u_src, u_gen, chunk_size, official).mean())
    return float(score)


def _path_length(tracks: np.ndarray) -> np.ndarray:
    """Total path length ``sum_t ||p(t+1) - p(t)||`` of each track, ``(N,)``."""
    return np.linalg.norm(np.diff(tracks, axis=1), axis=-1).sum(axis=1)

"""MTBench's motion-fidelity score (DeT, Shi et al., ICCV 2025), pure numpy.

Tracks are in **normalised** coordinates ``(x / W, y / H)``. A track ``p(0..T-1)`` becomes the
sequence of unit vectors of its initial position and its displacements::

    u(0) = p(0) / ||p(0)||,   u(t) = v(t) / ||v(t)||,  v(t) = p(t) - p(t-1),  t = 1..T-1

and the cosine similarity of a generated track ``g`` and a reference track ``s`` is
``cos(g, s) = 1/T sum_t <u_g(t), u_s(t)>``. The score of a generated video is::

    F_cos(S, G) = 1/|G| sum_{g in G} max_{s in S} cos(g, s)

With the optional "Fréchet" term (MTBench's ``--add_frechet_score``), ``K`` tracks are drawn at
random from each set and, with ``d(g, s)`` the mean Euclidean distance over all ``T x T``
pairs of their points (what MTBench calls the Fréchet distance; it is not the discrete Fréchet
distance) and ``sim = 1 / (1 + d)``::

    F = 0.5 * F_cos(S, G) + 0.5 * 1/K sum_{g in G_K} max_{s in S_K} sim(g, s)

Differences from MTBench's ``evaluation.py``, all deliberate: a zero vector (a point at the
origin, or a step without motion) stays zero instead of 0/0 = NaN; the K tracks are drawn
with a seeded generator (MTBench uses the global torch RNG), with the same indices for both
sets when they have the same number of tracks (as MTBench, which assumes it) and
independently otherwise. When the frame counts differ, the longer set is subsampled at
``linspace(0, T_long - 1, T_short)`` truncated to integers, as in MTBench.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["mtbench_motion_fidelity", "load_mtbench_trajectories", "normalise_tracks", "align_frames",
           "mtbench_variant"]


def normalise_tracks(tracks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel tracks ``(N, T, 2)`` -> ``(x / W, y / H)`` (MTBench's coordinates)."""
    t = np.asarray(tracks, dtype=np.float64)
    return t / np.array([float(width), float(height)])


def load_mtbench_trajectories(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MTBench's stored reference trajectories (``trajectories/<video>.pth``): a tensor
    ``(T, N, 3)`` of ``(x / W, y / H, visibility)`` written by its ``generate_trajectories.py``,
    read with ``torch.load(weights_only=True)``. Returns ``(tracks (N, T, 2), visible (N, T))``.

    Raises:
        ValueError: naming the file, when it does not hold such a tensor.
    """
    import torch

    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read with torch.load(weights_only=True): {exc}") from exc
    if isinstance(data, torch.Tensor) and data.ndim == 4 and data.shape[0] == 1:
        data = data[0]
    if not isinstance(data, torch.Tensor) or data.ndim != 3 or data.shape[-1] != 3 or data.shape[0] < 2:
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"{path}: expected a (T, N, 3) tensor of (x/W, y/H, visibility), got {shape}")
    arr = data.double().numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: trajectories contain non-finite values")
    return np.transpose(arr[..., :2], (1, 0, 2)), np.transpose(arr[..., 2] > 0.5, (1, 0))


def align_frames(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the set with more frames to the other's count (MTBench's integer linspace)."""
    ta, tb = a.shape[1], b.shape[1]
    if ta > tb:
        a = a[:, np.linspace(0, ta - 1, tb).astype(np.int32)]
    elif tb > ta:
        b = b[:, np.linspace(0, tb - 1, ta).astype(np.int32)]
    return a, b


def _unit_sequence(tracks: np.ndarray, eps: float) -> np.ndarray:
    seq = np.concatenate([tracks[:, :1], np.diff(tracks, axis=1)], axis=1)
    norm = np.linalg.norm(seq, axis=-1, keepdims=True)
    return np.divide(seq, norm, out=np.zeros_like(seq), where=norm > eps)


def _mean_point_distance(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(K, L)``: mean over all ``T x T`` point pairs of ``||g_k(t) - s_l(t')||``."""
    diff = g[:, None, :, None, :] - s[None, :, None, :, :]  # (K, L, T, T, 2)
    return np.linalg.norm(diff, axis=-1).mean(axis=(2, 3))


def mtbench_variant(frechet: bool, frechet_samples: int = 50) -> str:
    """The name recorded with the score: ``cosine`` or ``cosine+frechet<K>``."""
    return f"cosine+frechet{int(frechet_samples)}" if frechet else "cosine"


def mtbench_motion_fidelity(
    reference: np.ndarray,
    generated: np.ndarray,
    frechet: bool = False,
    frechet_samples: int = 50,
    seed: int = 0,
    eps: float = 1e-12,
) -> float:
    """MTBench motion fidelity (higher is better, at most 1) of normalised tracks.

    Args:
        reference: ``(N, T_s, 2)`` reference tracks in normalised coordinates.
        generated: ``(M, T_g, 2)`` generated-video tracks in normalised coordinates.
        frechet: add MTBench's "Fréchet" term on ``frechet_samples`` random tracks.
        seed: seed of the track draw of the Fréchet term.
    """
    ref = np.asarray(reference, dtype=np.float64)
    gen = np.asarray(generated, dtype=np.float64)
    for name, arr in (("reference", ref), ("generated", gen)):
        if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
            raise ValueError(f"{name} tracks must be (N, T >= 2, 2), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} tracks contain non-finite positions")
    gen, ref = align_frames(gen, ref)
    ug, us = _unit_sequence(gen, eps), _unit_sequence(ref, eps)
    n_t = ug.shape[1]
    cos = ug.reshape(len(ug), -1) @ us.reshape(len(us), -1).T / n_t  # (M, N)
    score = cos.max(axis=1).mean()
    if not frechet:
        return float(score)
    rng = np.random.default_rng(seed)
    k = int(frechet_samples)
    ids_g = rng.integers(0, len(gen), size=k)
    ids_s = ids_g if len(gen) == len(ref) else rng.integers(0, len(ref), size=k)
    sim = 1.0 / (1.0 + _mean_point_distance(gen[ids_g], ref[ids_s]))
    return float(0.5 * score + 0.5 * sim.max(axis=1).mean())

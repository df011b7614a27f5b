"""Which unlabelled images a round sends to people: the four strategies, on numbers alone.

Every strategy orders all candidates; the first `budget` are the round's images, the
rest keep an order a user can read in the ranking CSV.

- uncertainty: the highest uncertainty first.
- diversity: greedy k-center (Sener & Savarese's core-set rule): each pick is the
  candidate farthest from its nearest labelled or already-picked image, in the model's
  own feature space, so a round covers the candidates rather than one corner of them.
- hybrid: k-center weighted by uncertainty: each pick maximises uncertainty x distance
  to the nearest labelled or picked image. An uncertain image next to one already picked
  loses its claim, so a round is not ten near-copies of one hard quadrat.
- random: a seeded permutation, the baseline every other strategy must beat.

After the budget, the rest follow the strategy's score at the moment the picking stopped
(distances then include every picked image). Ties go to the lower candidate index.
Memory: the features (N x D float32) and three N-vectors; distances to the labelled set
are computed in chunks, never as an N x M matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("hybrid", "uncertainty", "diversity", "random")
CHUNK_ROWS = 4096  # rows of a distance block: 4096 x 4096 float32 is 64 MiB


@dataclass(frozen=True)
class Selection:
    order: np.ndarray  # candidate indices, best first: the first `budget` are the round
    budget: int  # how many of `order` are picked (min of the asked budget and candidates)
    score: np.ndarray  # per candidate: the strategy's score when it was picked or at the stop
    distance: np.ndarray  # per candidate: feature distance to the nearest centre, same moment

    @property
    def picked(self) -> np.ndarray:
        return self.order[: self.budget]

    def rank_of(self) -> np.ndarray:
        """Per candidate, its 1-based rank."""
        ranks = np.empty(len(self.order), np.int64)
        ranks[self.order] = np.arange(1, len(self.order) + 1)
        return ranks


def nearest_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point to its nearest centre (inf without centres).
    Computed in float64 one block at a time: the inputs stay as they are (float32
    features of 50 000 images are 150 MiB; a float64 copy would double that)."""
    nearest = np.full(len(points), np.inf, np.float64)
    if len(centres) == 0 or len(points) == 0:
        return nearest
    for first in range(0, len(centres), CHUNK_ROWS):
        part = np.asarray(centres[first : first + CHUNK_ROWS], np.float64)
        part_norms = np.einsum("ij,ij->i", part, part)
        for start in range(0, len(points), CHUNK_ROWS):
            block = np.asarray(points[start : start + CHUNK_ROWS], np.float64)
            squared = (
                np.einsum("ij,ij->i", block, block)[:, None] + part_norms[None, :]
                - 2.0 * block @ part.T
            )  # fmt: skip
            np.minimum(
                nearest[start : start + len(block)],
                np.sqrt(np.maximum(squared, 0.0)).min(axis=1),
                out=nearest[start : start + len(block)],
            )
    return nearest


def _order_rest(score: np.ndarray, picked: list[int]) -> np.ndarray:
    """The picked indices in pick order, then the others by decreasing score, ties by index."""
    rest = np.ones(len(score), bool)
    rest[picked] = False
    others = np.flatnonzero(rest)
    others = others[np.lexsort((others, -score[others]))]
    return np.concatenate([np.asarray(picked, np.int64), others]).astype(np.int64)


def weighted_k_center(
    features: np.ndarray,
    labelled: np.ndarray,
    budget: int,
    weights: np.ndarray | None = None,
) -> Selection:
    """Greedy k-center over `features` (N, D) with `labelled` (M, D) as the first centres.

    weights: per candidate, multiplies its distance (None: plain k-center). Without any
    labelled image the candidates' mean stands in as the one centre until the first pick.
    """
    count = len(features)
    budget = min(budget, count)
    weights = np.ones(count) if weights is None else np.asarray(weights, np.float64)
    distance = nearest_distances(features, labelled)
    if len(labelled) == 0 and count:
        distance = nearest_distances(features, features.mean(axis=0, keepdims=True))
    picked: list[int] = []
    taken = np.zeros(count, bool)
    picked_score = np.empty(count, np.float64)
    picked_distance = np.empty(count, np.float64)
    for _ in range(budget):
        score = np.where(taken, -np.inf, weights * distance)
        best = int(np.argmax(score))  # the first of equal scores: the lower index
        picked.append(best)
        taken[best] = True
        picked_score[best], picked_distance[best] = score[best], distance[best]
        to_best = nearest_distances(features, features[best : best + 1])
        # the mean was a stand-in centre: the first pick replaces it
        distance = np.minimum(distance, to_best) if len(labelled) or len(picked) > 1 else to_best
    final = weights * distance
    final[taken] = picked_score[taken]
    distance = distance.copy()
    distance[taken] = picked_distance[taken]
    return Selection(_order_rest(np.where(taken, np.inf, final), picked), budget, final, distance)


def select(
    strategy: str,
    budget: int,
    uncertainty: np.ndarray,
    features: np.ndarray,
    labelled: np.ndarray,
    seed: int = 0,
) -> Selection:
    """Order the candidates by `strategy` (one of STRATEGIES) and pick `budget` of them.

    uncertainty: per candidate, higher = less sure (used by uncertainty and hybrid).
    features: (N, D) candidate embeddings; labelled: (M, D) embeddings of the images
    already labelled (used by diversity and hybrid; M may be 0).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if budget < 1:
        raise ValueError(f"budget {budget}: pick at least one image")
    uncertainty = np.asarray(uncertainty, np.float64)
    count = len(uncertainty)
    if len(features) != count:
        raise ValueError(f"{len(features)} feature rows for {count} candidates")
    budget = min(budget, count)
    if strategy == "diversity":
        return weighted_k_center(features, labelled, budget)
    if strategy == "hybrid":
        return weighted_k_center(features, labelled, budget, uncertainty)
    distance = nearest_distances(features, labelled)
    if strategy == "uncertainty":
        order = np.lexsort((np.arange(count), -uncertainty))
        return Selection(order.astype(np.int64), budget, uncertainty.copy(), distance)
    order = np.random.default_rng(seed).permutation(count)
    score = np.empty(count, np.float64)
    score[order] = np.linspace(1.0, 0.0, count) if count > 1 else 1.0
    return Selection(order.astype(np.int64), budget, score, distance)

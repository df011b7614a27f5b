"""What happened to each colony between two surveys of one quadrat.

Two colonies match when their overlap is at least `min_overlap` (60 %) of the smaller
one. Matches link colonies into groups (connected components); each group is one event:

    died      a colony of the first survey matched by none of the second
    born      a colony of the second survey matching none of the first
    grew / shrank / same   one colony to one colony; `same` within `same_within` (5 %)
              of its first area, else by the sign of the change
    split     one colony to several
    fused     several colonies to one
    split and fused   several to several (rare; reported rather than forced into one)

Both surveys are in the first photo's frame (register.py) and clipped to the area both
photos show, so areas compare pixel for pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.sources import Colony

EVENTS = ("grew", "shrank", "same", "born", "died", "split", "fused", "split and fused")


@dataclass(frozen=True)
class Event:
    event: str
    before: tuple[Colony, ...]
    after: tuple[Colony, ...]

    @property
    def area_before(self) -> int:
        return sum(c.area for c in self.before)

    @property
    def area_after(self) -> int:
        return sum(c.area for c in self.after)


def overlap(a: Colony, b: Colony) -> int:
    """Pixels the two colonies share (both in one frame)."""
    top, left = max(a.top, b.top), max(a.left, b.left)
    bottom, right = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if bottom <= top or right <= left:
        return 0
    crop_a = a.mask[top - a.top : bottom - a.top, left - a.left : right - a.left]
    crop_b = b.mask[top - b.top : bottom - b.top, left - b.left : right - b.left]
    return int(np.count_nonzero(crop_a & crop_b))


def match(
    before: list[Colony], after: list[Colony], min_overlap: float = 0.6
) -> list[tuple[int, int]]:
    """(i, j) index pairs whose overlap is at least `min_overlap` of the smaller colony."""
    links = []
    for i, a in enumerate(before):
        for j, b in enumerate(after):
            shared = overlap(a, b)
            if shared and shared >= min_overlap * min(a.area, b.area):
                links.append((i, j))
    return links


def _components(n_before: int, n_after: int, links: list[tuple[int, int]]) -> list[list[int]]:
    """Groups of node ids (before: 0..n_before-1, after: n_before..) linked by matches."""
    parent = list(range(n_before + n_after))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for i, j in links:
        parent[root(i)] = root(n_before + j)
    groups: dict[int, list[int]] = {}
    for node in range(n_before + n_after):
        groups.setdefault(root(node), []).append(node)
    return sorted(groups.values())


def classify(before: list[Colony], after: list[Colony], same_within: float = 0.05) -> str:
    if not after:
        return "died"
    if not before:
        return "born"
    if len(before) == 1 and len(after) == 1:
        change = after[0].area / before[0].area - 1
        if abs(change) <= same_within:
            return "same"
        return "grew" if change > 0 else "shrank"
    if len(before) == 1:
        return "split"
    return "fused" if len(after) == 1 else "split and fused"


def colony_events(
    before: list[Colony],
    after: list[Colony],
    min_overlap: float = 0.6,
    same_within: float = 0.05,
) -> list[Event]:
    """Every colony of both surveys in exactly one event."""
    links = match(before, after, min_overlap)
    events = []
    for nodes in _components(len(before), len(after), links):
        olds = [before[n] for n in nodes if n < len(before)]
        news = [after[n - len(before)] for n in nodes if n >= len(before)]
        events.append(Event(classify(olds, news, same_within), tuple(olds), tuple(news)))
    return events

"""Which samples of a FiftyOne dataset the loop may send (the candidates) and which it
learns from already (the labelled training images), read in one query each.

A candidate has no shape in the label field, no split tag and no round tag (a sample in
an earlier round is with the annotators or done). With `unlabelled_tag`, the candidates
are instead the samples carrying that tag, less those in a round, with a split tag or
with shapes (the loop replaces a round's shapes by what comes back from CVAT, so a
sample people have drawn on is never sent). The labelled set is
the train-tagged samples, with or without shapes (an image a person found without coral
is labelled too): the images the model learns from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SPLIT_TAGS = ("train", "val", "test")
ROUND_TAG = re.compile(r"^round_\d+$")


def round_tag(number: int) -> str:
    return f"round_{number}"


@dataclass(frozen=True)
class PoolSample:
    sample_id: str
    filepath: str


@dataclass(frozen=True)
class Pool:
    candidates: list[PoolSample]
    labelled: list[PoolSample]


def shape_counts(dataset, label_field: str) -> list[int]:
    """Per sample (dataset order), the number of shapes in label_field (0 when unset)."""
    from fiftyone import ViewField as F

    if not dataset.has_field(label_field):
        return [0] * len(dataset)
    return dataset.values(F(f"{label_field}.polylines").length())


def find_pool(dataset, label_field: str, unlabelled_tag: str | None = None) -> Pool:
    ids, paths, tags = dataset.values(["id", "filepath", "tags"])
    shapes = shape_counts(dataset, label_field)
    candidates, labelled = [], []
    for sample_id, path, sample_tags, count in zip(ids, paths, tags, shapes, strict=True):
        sample_tags = set(sample_tags or ())
        in_round = any(ROUND_TAG.match(t) for t in sample_tags)
        if unlabelled_tag is not None:
            unlabelled = (
                unlabelled_tag in sample_tags
                and not in_round
                and not count
                and not sample_tags & set(SPLIT_TAGS)
            )
        else:
            unlabelled = not count and not sample_tags & set(SPLIT_TAGS) and not in_round
        if unlabelled:
            candidates.append(PoolSample(sample_id, path))
        elif "train" in sample_tags:
            labelled.append(PoolSample(sample_id, path))
    return Pool(candidates, labelled)

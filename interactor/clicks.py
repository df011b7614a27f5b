"""One click (or a few, or a box) on a CVAT frame -> the coral colony's mask.

ClickSegmenter is the per-request pipeline the Nuclio handler calls:

1. the frame's embedding from the cache (keyed by the frame's bytes: a hit decodes
   nothing), else the frame decoded and embedded once;
2. the prompt checked against the frame's size;
3. SAM's decoder: for a single positive click (ambiguous: whole colony, part, sub-part)
   its three masks, else one mask (several clicks or a box are not ambiguous; SAM's
   recommendation for multimask_output);
4. the masks ranked (`choose`) and the first whose colony is not empty kept
   (interactor/colony.py: the connected components under the positive clicks).

The names the handler needs are importable from here too (Prompt, parse_prompt, ...).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .cache import EmbeddingCache, frame_key
from .colony import keep_colony
from .predictor import ClickPredictor, Decoded, FrameEmbedding
from .prompt import BadPrompt, Prompt, parse_prompt
from .sam_predictor import SamClickPredictor

log = logging.getLogger("interactor")

# how a single click's three masks are ranked: SAM's predicted IoU, or that times
# CoralSCoP's coral probability (prefers the candidate the coral head calls coral)
CHOICES = ("iou", "coral")

__all__ = [
    "CHOICES",
    "BadPrompt",
    "ClickPredictor",
    "ClickResult",
    "ClickSegmenter",
    "Decoded",
    "FrameEmbedding",
    "Prompt",
    "SamClickPredictor",
    "parse_prompt",
]


@dataclass
class ClickResult:
    """mask: (H, W) bool, the colony, or None (nothing found); score: SAM's predicted IoU
    of the mask it came from (0.0 for None); coral: that mask's coral probability (None
    without a coral head, or without a mask); encoder_ran: the frame was not cached;
    seconds: time per stage (hash, image, encoder, decoder, colony, total)."""

    mask: np.ndarray | None
    score: float
    encoder_ran: bool
    seconds: dict = field(default_factory=dict)
    coral: float | None = None


class ClickSegmenter:
    """Clicks -> colony mask, with the frame's embedding cached between clicks.

    choose: how the three candidate masks of a single click are ranked. "iou" is SAM's own
    rule (highest predicted IoU). "coral" ranks by predicted IoU x coral probability, so a
    candidate the coral head calls background (the surrounding rubble or the whole reef
    patch) loses to a slightly less confident coral one; it needs CoralSCoP weights,
    and without a coral head it falls back to "iou" (said once in the log). With one
    candidate (several clicks or a box) there is nothing to choose.
    """

    def __init__(
        self, predictor: ClickPredictor, cache: EmbeddingCache, choose: str = "iou"
    ) -> None:
        if choose not in CHOICES:
            raise ValueError(f"choose={choose!r}: use one of {', '.join(CHOICES)}")
        self.predictor = predictor
        self.cache = cache
        self.choose = choose
        # one frame embedded at a time: two requests on a new frame (two annotators, or a
        # retry) then wait for one encoder run instead of both running it
        self._embed_lock = threading.Lock()
        self._said_no_coral = False

    def _embedding(
        self, data: bytes, decode_image: Callable[[], np.ndarray], prompt: Prompt, seconds: dict
    ) -> tuple[FrameEmbedding, bool]:
        started = time.perf_counter()
        key = frame_key(data)
        seconds["hash"] = time.perf_counter() - started
        with self._embed_lock:
            embedding = self.cache.get(key)
            if embedding is not None:
                prompt.check_inside(embedding.width, embedding.height)
                return embedding, False
            started = time.perf_counter()
            rgb = decode_image()
            seconds["image"] = time.perf_counter() - started
            # a bad prompt fails before the encoder runs, not after
            prompt.check_inside(rgb.shape[1], rgb.shape[0])
            started = time.perf_counter()
            embedding = self.predictor.embed(rgb)
            seconds["encoder"] = time.perf_counter() - started
            self.cache.put(key, embedding)
            return embedding, True

    def ranking(self, decoded: Decoded) -> list[int]:
        """Candidate indices, best first, by `choose`."""
        score = np.asarray(decoded.iou, dtype=np.float64)
        if self.choose == "coral" and len(score) > 1:
            if decoded.coral is None:
                if not self._said_no_coral:
                    self._said_no_coral = True
                    log.warning(
                        "choose='coral' needs CoralSCoP's coral head, and this model has none "
                        "(a stock SAM checkpoint): single clicks are ranked by predicted IoU"
                    )
            else:
                score = score * np.asarray(decoded.coral, dtype=np.float64)
        return [int(i) for i in np.argsort(-score, kind="stable")]

    def segment(
        self, data: bytes, decode_image: Callable[[], np.ndarray], prompt: Prompt
    ) -> ClickResult:
        """The colony for `prompt` on the frame whose file bytes are `data`.

        decode_image: returns the frame as (H, W, 3) uint8 RGB; called only when the frame
        is not cached. The prompt is checked against the frame's size (BadPrompt), from
        the cache or the decoded frame, before the encoder runs.
        """
        started = time.perf_counter()
        seconds: dict = {}
        embedding, encoder_ran = self._embedding(data, decode_image, prompt, seconds)
        if prompt.is_empty:  # negatives alone say where the colony is not, not where it is
            seconds["total"] = time.perf_counter() - started
            return ClickResult(None, 0.0, encoder_ran, seconds)
        step = time.perf_counter()
        decoded = self.predictor.decode(embedding, prompt, prompt.is_single_click)
        seconds["decoder"] = time.perf_counter() - step
        step = time.perf_counter()
        result = ClickResult(None, 0.0, encoder_ran, seconds)
        for index in self.ranking(decoded):
            mask = keep_colony(np.asarray(decoded.masks[index], dtype=bool), prompt)
            if mask is not None:
                coral = None if decoded.coral is None else float(decoded.coral[index])
                result = ClickResult(mask, float(decoded.iou[index]), encoder_ran, seconds, coral)
                break
        seconds["colony"] = time.perf_counter() - step
        seconds["total"] = time.perf_counter() - started
        return result

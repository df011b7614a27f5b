"""What a click predictor computes: a frame's embedding once, then masks per prompt.

The split follows SAM's: the image encoder (the expensive part) depends on the frame
alone, prompt decoding on the embedding and the clicks. CoralSCoP's coral head reads
the mask decoder's own transformer outputs (models/coralscop.py), so the embedding is
all a later click needs; nothing else is kept per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .prompt import Prompt


@dataclass
class FrameEmbedding:
    """SAM's image embedding of one frame and the sizes to map prompts and masks.

    features: (1, 256, 64, 64) tensor on the predictor's device (f32; any array with
    `nbytes` for stand-ins); input_size: (h, w) of the frame after SAM's
    ResizeLongestSide (the unpadded part of the 1024 x 1024 input); original_size: (h, w)
    of the frame as decoded.
    """

    features: Any
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes)

    @property
    def width(self) -> int:
        return int(self.original_size[1])

    @property
    def height(self) -> int:
        return int(self.original_size[0])


@dataclass
class Decoded:
    """The decoder's answer to one prompt: K candidate masks (3 for a single click with
    multimask output, else 1), full frame.

    masks: (K, H, W) bool; iou: (K,) SAM's predicted IoU; coral: (K,) CoralSCoP's coral
    probability, or None when the model has no category head (stock SAM)."""

    masks: np.ndarray
    iou: np.ndarray
    coral: np.ndarray | None = None


class ClickPredictor(Protocol):
    """The model side of ClickSegmenter (SamClickPredictor, or a stand-in in tests)."""

    def embed(self, rgb: np.ndarray) -> FrameEmbedding:
        """The embedding of an (H, W, 3) uint8 RGB frame."""
        ...

    def decode(self, embedding: FrameEmbedding, prompt: Prompt, multimask: bool) -> Decoded:
        """Masks for `prompt` (frame pixels) on an embedded frame."""
        ...

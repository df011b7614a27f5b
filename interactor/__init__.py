"""Click-to-segment for CVAT's interactor: CoralSCoP (SAM) prompt decoding per click.

The Nuclio handler (nuclio/interactor/main.py) is a thin shell around this package:

- prompt.py: CVAT's request keys (pos_points, neg_points, obj_bbox) -> a checked Prompt;
- cache.py: image embeddings kept per frame (keyed by the frame's bytes), LRU by bytes;
- predictor.py: what a click predictor computes (FrameEmbedding, Decoded, the protocol);
- sam_predictor.py: the real one, SAM / CoralSCoP loaded as the rest of the toolkit loads it;
- colony.py: which connected parts of SAM's mask are the colony the user pointed at;
- clicks.py: ClickSegmenter, the per-click pipeline (cache, decode, choice, colony);
- answer.py: the colony as CVAT's answer, a compact RLE over the colony's own box.

Only sam_predictor.py (and clicks.py, which re-exports it) needs PyTorch and
segment-anything at import time; mmseg & co. load only with a model (SamClickPredictor.load).
"""

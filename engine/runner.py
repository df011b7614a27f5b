"""`CoralRunner`: mmengine's Runner with safe checkpoint loading and checked resumes.

- `--load-from` loads weights only (weights_only=True); a head with another class
  count is re-initialised with a message (the coarse-to-fine taxonomy step).
- `--resume` refuses a checkpoint whose model config differs from the current
  one, naming the keys, instead of failing half-way or silently mixing runs.
"""

from __future__ import annotations

from mmengine.config import Config
from mmengine.runner import Runner, find_latest_checkpoint
from mmseg.registry import RUNNERS

from models.safe_checkpoint import load_weights, safe_load

# Keys that only choose starting weights: a resumed run loads all weights from its
# checkpoint, so they may differ (train.py drops pretrained when resuming).
INIT_ONLY_KEYS = ("backbone.pretrained", "backbone.init_cfg")


class ConfigMismatchError(ValueError):
    """The checkpoint to resume was trained with another model config."""


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def model_config_differences(saved_cfg_text: str, current: Config) -> list[str]:
    saved = Config.fromstring(saved_cfg_text, file_format=".py")
    before, after = _flatten(saved.model.to_dict()), _flatten(current.model.to_dict())
    keys = sorted(set(before) | set(after))
    return [
        f"model.{k}: {before.get(k)!r} -> {after.get(k)!r}"
        for k in keys
        if before.get(k) != after.get(k) and not k.startswith(INIT_ONLY_KEYS)
    ]


@RUNNERS.register_module()
class CoralRunner(Runner):
    def load_or_resume(self) -> None:
        if self._has_loaded:
            return
        if self._resume:
            path = self._load_from or find_latest_checkpoint(self.work_dir)
            if path is None:
                self.logger.warning(
                    f"--resume: no checkpoint in {self.work_dir}; starting from scratch"
                )
            else:
                self._check_resumable(path)
                self.logger.info(f"Resuming from {path}")
                self.resume(path)
        elif self._load_from:
            partial = bool(self.cfg.get("load_from_partial", False))
            load_weights(self.model.module if hasattr(self.model, "module") else self.model,
                         self._load_from, partial, self.logger)  # fmt: skip
            self.logger.info(f"Loaded weights from {self._load_from}")
        self._has_loaded = True

    def _check_resumable(self, path: str) -> None:
        meta = safe_load(path).get("meta", {})
        if "cfg" not in meta:
            return
        differences = model_config_differences(meta["cfg"], self.cfg)
        if differences:
            listed = "\n  ".join(differences[:20])
            raise ConfigMismatchError(
                f"Cannot resume from {path}: it was trained with another model config:\n"
                f"  {listed}\nResume with the config it was trained with, or start a new run "
                "that uses its weights with --load-from."
            )

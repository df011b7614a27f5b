#!/usr/bin/env bash
# Package a trained model as a CVAT auto-annotation function (Nuclio): nuclio.zip.
#   ./deploy_as_zip.sh MODEL_NAME SEGFORMER_WEIGHTS SEGFORMER_CONFIG SAM_WEIGHTS
#   ./deploy_as_zip.sh --semantic-only MODEL_NAME SEGFORMER_WEIGHTS SEGFORMER_CONFIG
#   (add --overwrite to replace an existing nuclio.zip and cvat_labels.json)
# e.g.
#   ./deploy_as_zip.sh coralscopsegformer \
#       work_dirs/dinov2_vitb14_coralsegv4_ms_config_segformer/best_mIoU_epoch_140.pth \
#       work_dirs/dinov2_vitb14_coralsegv4_ms_config_segformer/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
#       assets/pretrained_models/vit_b_coralscop.pth
# --semantic-only packages no SAM weights on purpose (function.yaml gets
# CORAL_SEMANTIC_ONLY=1): each genus region of the semantic map becomes an instance.
# Without it, the function refuses to start when vit_b_coralscop.pth is missing.
# Inputs are validated first (nuclio/package.py); nuclio.zip appears in the current
# directory only when complete.
set -euo pipefail
# four arguments either way (the SAM weights, or the flag in their place), and --overwrite
count=0
for argument in "$@"; do [ "$argument" = --overwrite ] || count=$((count + 1)); done
if [ "$count" -ne 4 ]; then
  sed -n '2,5p' "$0" | sed 's/^# //' >&2
  exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/nuclio/package.py" "$@"

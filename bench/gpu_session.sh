#!/usr/bin/env bash
# Every GPU figure of bench/RESULTS.md in one device call (about 8 minutes on an H100).
#
#   bash bench/gpu_session.sh OUT_DIR
#
# Built for the project's offline GPU machine: when a .gpu-wheels folder came along
# (../shared/gpu/wheelhouse.sh builds it), its wheels are installed into .gpu-site
# first. Each benchmark runs under its own time limit, so one that hangs or fails is
# logged and the rest still run; the exit status is non-zero when any failed.
# OUT_DIR receives session.log (everything printed), results.jsonl (one JSON line
# per benchmark), targets.txt (bench/check_targets.py's table) and device.txt.
# SMOKE=1 runs the same benchmarks in their smallest setting on the CPU.
# BUDGET_S=N: the whole session must end within N seconds (a device call's limit):
# each benchmark's limit is cut to what is left, and one that cannot start in time
# is logged as skipped (and counts as failed). The runs go most important first.
# RUNS="train_b4 profile": only the runs named (a second call on the same lease).
set -uo pipefail
out=${1:?usage: bash bench/gpu_session.sh OUT_DIR}
mkdir -p "$out"
: >>"$out/results.jsonl"  # a session that measures nothing still gets its table
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python=${PYTHON:-python3}
wheels=${WHEELS-.gpu-wheels}  # WHEELS= (empty): use the environment as it is
if [ -n "$wheels" ] && [ -d "$wheels" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --target .gpu-site "$wheels"/*.whl \
    || { echo "installing $wheels failed" | tee -a "$out/session.log"; exit 1; }
  export PYTHONPATH=$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$python" -c "import torch, timm, mmengine, mmseg, segment_anything, cv2, numpy
print('torch', torch.__version__, 'cuda', torch.version.cuda, '| timm', timm.__version__,
      '| mmengine', mmengine.__version__, '| mmseg', mmseg.__version__,
      '| opencv', cv2.__version__, '| numpy', numpy.__version__)"
  echo "cpu cores: $(nproc)"
} >"$out/device.txt" 2>&1
cat "$out/device.txt" | tee -a "$out/session.log"

failed=()
budget=${BUDGET_S:-0}
bench() {  # bench NAME SECONDS SCRIPT ARGS...
  local name=$1 limit=$2; shift 2
  if [ -n "${RUNS:-}" ] && [[ " $RUNS " != *" $name "* ]]; then
    return
  fi
  if [ "$budget" -gt 0 ]; then  # keep 15 s for check_targets
    local left=$((budget - SECONDS - 15))
    if [ "$left" -lt 20 ]; then
      echo "=== $name: skipped, ${left} s left of BUDGET_S=$budget" | tee -a "$out/session.log"
      failed+=("$name(skipped)")
      return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  echo "=== $name (limit $limit s): $*" | tee -a "$out/session.log"
  local started=$SECONDS
  timeout "$limit" "$python" "$@" >"$out/.run.log" 2>&1
  local status=$?
  cat "$out/.run.log" >>"$out/session.log"
  grep '^{"benchmark"' "$out/.run.log" | sed "s/^{/{\"run\": \"$name\", /" >>"$out/results.jsonl"
  tail -n 12 "$out/.run.log" | grep -v '^{'
  echo "=== $name: exit $status after $((SECONDS - started)) s" | tee -a "$out/session.log"
  [ "$status" -eq 0 ] || failed+=("$name")
}
config=configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py
if [ "${SMOKE:-0}" = 1 ]; then  # the same runs, tiny and on the CPU (tests/test_bench.py)
  semantic=(--device cpu --sizes 42 --native-size --warmup 0 --repeats 1)
  train=(configs/reef_demo_tiny.py --device cpu --data folder --folder-samples 2
         --folder-image-size 128 --workers 0 --steps 2 --warmup 0)
  train_b8=("${train[@]}" --checkpointing)
  no_thresholds=(--pred-iou-thresh 0 --stability-score-thresh 0)
  two_stage=(--device cpu --tiny --image-size 96 --points-per-side 3 --crop-n-layers 0
             --warmup 0 --repeats 1)
  generator=(--device cpu --tiny --image-size 64 --points-per-side 2 --crop-n-layers 0
             --warmup 0 --repeats 1 "${no_thresholds[@]}")
  generator_no_filters=("${generator[@]}")
  profile=(--device cpu --tiny --image-size 96 --points-per-side 3 --crop-n-layers 0 --warmup 0
           --rows 5)
  pipeline=(--num-samples 2 --image-size 128 --workers 0 --batches 1)
  cleanup=(--masks 4 --size 128 --warmup 0 --repeats 1)
  # the 40000 px mosaic's smallest setting: 4 tiles of 128 px, tiny models, CPU
  scale=(--sizes 192 --tile-size 128 --overlap 32 --quadrat 128 --device cpu)
else
  semantic=(--device cuda --sizes 1920 --warmup 2 --repeats 10)
  train=($config --device cuda --amp --batch 4 --data folder --steps 20 --warmup 4)
  train_b8=($config --device cuda --amp --batch 8 --checkpointing --data folder --steps 10
            --warmup 2)
  # SAM_CHECKPOINT: real CoralSCoP weights, where the machine has them (random otherwise)
  sam=(${SAM_CHECKPOINT:+--checkpoint "$SAM_CHECKPOINT"})
  two_stage=(--device cuda --image-size 1920 --warmup 1 --repeats ${TWO_STAGE_REPEATS:-3}
             ${SAM_CHECKPOINT:+--sam-checkpoint "$SAM_CHECKPOINT"})
  generator=(--device cuda --image-size 1920 --warmup 1 --repeats 3 "${sam[@]}")
  # both generators do the full work on every proposal (upsampling, clean-up, NMS): with
  # random weights that is noise, so a lighter grid keeps segment-anything's RLE in bounds
  no_thresholds=(--pred-iou-thresh 0 --stability-score-thresh 0)
  generator_no_filters=(--device cuda --image-size 1920 --points-per-side 8 --crop-n-layers 0
                        --warmup 1 --repeats 2 "${no_thresholds[@]}" "${sam[@]}")
  profile=(--device cuda)
  pipeline=(--workers 0,4,8 --batches 12)
  cleanup=(--device cuda)
  # tiled inference of a 40000 x 40000 mosaic: host peak RSS (target 8 GiB) and peak GPU
  # memory (one tile); the recipe's models, random weights, light SAM. Tiles of 2048 px
  # (484 of them) keep it inside its limit; 1024 px tiles would be 2025 (not timed yet)
  scale=(--sizes 40000 --device cuda --full-models --points-per-side 8 --tile-size 2048)
fi
bench semantic_end2end 150 bench/semantic_bench.py --part end2end --dtype bf16 "${semantic[@]}"
bench train_b4 120 bench/train_bench.py "${train[@]}"
bench two_stage 120 bench/two_stage_bench.py "${two_stage[@]}"
bench generator 150 bench/generator_bench.py "${generator[@]}"
bench train_b8_checkpointing 120 bench/train_bench.py "${train_b8[@]}"
bench semantic_end2end_fp32 120 bench/semantic_bench.py --part end2end --dtype fp32 "${semantic[@]}"
bench generator_no_filters 90 bench/generator_bench.py "${generator_no_filters[@]}"
bench profile 90 bench/gpu_profile.py "${profile[@]}"
bench two_stage_no_filters 90 bench/two_stage_bench.py "${two_stage[@]}" "${no_thresholds[@]}"
bench train_b4_fused 120 bench/train_bench.py "${train[@]}" --fused
bench cleanup 60 bench/cleanup_bench.py "${cleanup[@]}"
bench pipeline 90 bench/pipeline_bench.py "${pipeline[@]}"
bench scale_40000 540 bench/scale_bench.py "${scale[@]}"
rm -f "$out/.run.log"
"$python" bench/check_targets.py "$out/results.jsonl" >"$out/targets.txt" 2>&1 \
  || failed+=(check_targets)
tee -a "$out/session.log" <"$out/targets.txt"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" | tee -a "$out/session.log"
  exit 1
fi

#!/usr/bin/env bash
# The built-in example, end to end on CPU: every stage of the workflow that exists
# runs on the synthetic reef dataset `reef_demo_fo`. Run through `make demo`
# (which sets up .venv first) or inside an environment that has the project.
set -euo pipefail
cd "$(dirname "$0")"
export FIFTYONE_DO_NOT_TRACK="${FIFTYONE_DO_NOT_TRACK:-true}"

DATASET=reef_demo_fo
DATA_ROOT=data/prepared_for_training  # configs/reef_demo_tiny.py reads reef_demo under it
CONFIG=configs/reef_demo_tiny.py
WORK_DIR=work_dirs/reef_demo_tiny
INFER_DIR=results/two_stage_inference
STATS_DIR=results/reef_stats
ORTHO_DIR=data/reef_demo/orthomosaic
ORTHO_OUT=results/orthomosaic_inference
ORTHO_STATS=results/orthomosaic_stats
POOL=reef_demo_pool_fo
LOOP_DIR=work_dirs/annotation_loop/$POOL

step() { printf '\n==> %s\n' "$*"; }

step "1/10 Create the synthetic reef dataset in FiftyOne ($DATASET)"
python -m dataset.reef_demo --name "$DATASET"

step "2/10 Prepare it for MMSegmentation (prepare_data.py)"
# The demo owns its output folders, so it replaces them on every run.
python prepare_data.py "$DATASET" --image-size 256 --data-root "$DATA_ROOT" --overwrite

step "3/10 Train the tiny DINOv2 + SegFormer config on CPU (train.py)"
rm -rf "$WORK_DIR"
python train.py "$CONFIG" --work-dir "$WORK_DIR"

step "4/10 Evaluate the best checkpoint on val and test (test.py)"
for split in val test; do
  python test.py "$CONFIG" "$WORK_DIR/best_mIoU.pth" --split "$split" \
    --work-dir "$WORK_DIR/test_$split" --show-dir "$WORK_DIR/${split}_results"
done
# The synthetic genera are easy to tell apart: a run that learns reaches val mIoU >= 0.8.
python - "$WORK_DIR/test_val/metrics.json" <<'PY'
import json, sys
miou = json.load(open(sys.argv[1]))["mIoU"]
print(f"val mIoU {miou:.3f} (the demo expects >= 0.8)")
sys.exit(0 if miou >= 0.8 else 1)
PY

step "5/10 Two-stage inference on the test images (inference_with_coralscop.py)"
# No CoralSCoP weights ship with the project (none can be downloaded here), so SAM
# ViT-B runs with random weights, as the log says: its proposals are noise and the
# instances come from the semantic regions. A small prompt grid keeps it to ~15 s
# an image on a CPU; with real weights use the defaults (32 points, 1 crop layer).
python inference_with_coralscop.py --input-dir "$DATA_ROOT/reef_demo/images/test" \
  --output-dir "$INFER_DIR" --segformer-config "$CONFIG" \
  --segformer-weights "$WORK_DIR/best_mIoU.pth" --device cpu \
  --points-per-side 4 --crop-n-layers 0 --save-semantic --overwrite

step "6/10 Tiled inference of a georeferenced orthomosaic (inference_with_coralscop.py --tiled)"
# Four test quadrats side by side (2 x 2, 512 px) as a GeoTIFF in UTM zone 55S at 1 mm per
# pixel stand in for a photogrammetry orthomosaic. Images over 40 MP go through tiles
# anyway; this small one is sent there with --tiled. Light SAM settings, as in step 5.
# tests/test_mosaic.py runs the lines between the markers as they are.
# >>> orthomosaic
python -m mosaic.synthetic "$ORTHO_DIR/reef_orthomosaic.tif" \
  --images "$DATA_ROOT/reef_demo/images/test" --grid 2 --epsg 32755 --mm-per-pixel 1
python inference_with_coralscop.py --input-dir "$ORTHO_DIR" --output-dir "$ORTHO_OUT" \
  --segformer-config "$CONFIG" --segformer-weights "$WORK_DIR/best_mIoU.pth" --device cpu \
  --tiled --tile-size 384 --tile-overlap 64 --points-per-side 4 --crop-n-layers 0 --taglab \
  --overwrite
# <<< orthomosaic

step "7/10 Orthomosaics both ways: predictions to TagLab and QGIS, corrections back to training and numbers"
# The run above also wrote the predictions as a TagLab project (taglab_project.json) and
# a GeoPackage (mosaics/reef_orthomosaic.gpkg). In a survey a person corrects them in
# TagLab or QGIS; here they go back in as they are: each becomes training crops (ignore
# outside the annotated area, splits by spatial blocks) and reef numbers.
# tests/test_mosaic.py runs the lines between the markers as they are.
# >>> exchange
python prepare_data.py "$ORTHO_OUT/taglab_project.json" --name reef_orthomosaic_taglab \
  --crop-size 256 --block-size 256 --data-root "$DATA_ROOT" --overwrite
python prepare_data.py "$ORTHO_DIR/reef_orthomosaic.tif" \
  --polygons "$ORTHO_OUT/mosaics/reef_orthomosaic.gpkg" --class-field class \
  --crop-size 256 --block-size 256 --data-root "$DATA_ROOT" --overwrite
python reef_stats.py summarize "$ORTHO_OUT/mosaics/reef_orthomosaic.gpkg" \
  --images "$ORTHO_DIR/reef_orthomosaic.tif" --output-dir "$ORTHO_STATS" --overwrite
# <<< exchange

step "8/10 Package the model as a CVAT function (deploy_as_zip.sh)"
# Random CoralSCoP-shaped SAM weights stand in for vit_b_coralscop.pth (see step 5).
SAM_RANDOM=data/reef_demo/vit_b_coralscop_RANDOM.pth
[ -f "$SAM_RANDOM" ] || python -m models.coralscop --write-random "$SAM_RANDOM"
./deploy_as_zip.sh reefdemo "$WORK_DIR/best_mIoU.pth" "$WORK_DIR/reef_demo_tiny.py" "$SAM_RANDOM" \
  --overwrite

step "9/10 From masks to reef numbers: predicted and annotated cover, colonies, report (reef_stats.py)"
# The demo's quadrats are taken to span 50 x 50 cm. tests/test_analysis_cli.py runs the
# lines between the markers as they are, on a synthetic copy of this layout.
# >>> reef numbers
python reef_stats.py summarize "$INFER_DIR" --truth "$DATA_ROOT/reef_demo" --split test \
  --quadrat-size-cm 50 --points 100 --seed 0 --output-dir "$STATS_DIR" --overwrite
# <<< reef numbers

step "10/10 The annotation loop: the model picks the images, people correct, the model learns (annotate.py)"
# A pool of 40 synthetic quadrats with two rare genera: 18 annotated (8 train, 4 val, 6
# test), 22 not yet. One round: rank picks the 4 images worth a person's time, send
# writes the archive CVAT imports (images + CVAT for images 1.1), a stand-in for the
# person returns their true shapes as CVAT's export, and receive takes them, prepares,
# fine-tunes the model of step 3 and evaluates it on the fixed test split. The demo owns
# the loop folder and the pool, so it makes both again on every run.
# tests/test_annotation_loop.py runs the lines between the markers as they are.
rm -rf "$LOOP_DIR"
# >>> annotation loop
python -m dataset.reef_demo --name "$POOL" --pool --num-samples 40 --overwrite
python annotate.py rank "$POOL" --loop-dir "$LOOP_DIR" --config "$CONFIG" \
  --checkpoint "$WORK_DIR/best_mIoU.pth" --budget 4
python annotate.py send "$POOL" --loop-dir "$LOOP_DIR"
python -m annotation.simulate "$POOL" --loop-dir "$LOOP_DIR" --output "$LOOP_DIR/corrected.zip"
python annotate.py receive "$POOL" --loop-dir "$LOOP_DIR" --export "$LOOP_DIR/corrected.zip" \
  --epochs 2 --image-size 256 --data-root "$DATA_ROOT"
# <<< annotation loop

cat <<DONE

Demo finished. Outputs:
  FiftyOne dataset   $DATASET  (python -c "import fiftyone as fo; print(fo.load_dataset('$DATASET'))")
  prepared dataset   $DATA_ROOT/reef_demo  (images/, annotations/, classes.txt, palette.txt, dataset_info.py, manifest.csv)
  training run       $WORK_DIR  (best_mIoU.pth -> best_mIoU_epoch_N.pth, epoch_N.pth, config copy, TensorBoard logs)
  evaluation         $WORK_DIR/test_{val,test}  (metrics.json, confusion_matrix.csv/.png)
  overlays           $WORK_DIR/{val,test}_results  (ground truth | prediction)
  two-stage results  $INFER_DIR  (visualizations/, masks/, semantic/, predictions.json, inference_log.txt)
  orthomosaic        $ORTHO_DIR/reef_orthomosaic.tif  (GeoTIFF, EPSG:32755, 1 mm per pixel)
    colonies GeoJSON $ORTHO_OUT/mosaics/reef_orthomosaic.geojson  (open in QGIS)
    class map        $ORTHO_OUT/mosaics/reef_orthomosaic.classes.tif  (GeoTIFF; .confidence.tif beside it)
    GeoPackage       $ORTHO_OUT/mosaics/reef_orthomosaic.gpkg  (the colonies in QGIS's own format)
    TagLab project   $ORTHO_OUT/taglab_project.json  (open in TagLab: File > Open Project)
    back to training $DATA_ROOT/reef_orthomosaic_taglab, $DATA_ROOT/reef_orthomosaic  (crops, spatial splits)
    its numbers      $ORTHO_STATS  (cover and colonies from the polygons)
  CVAT function      nuclio.zip  (function pth-mmseg-reefdemo; unzip, then nuctl deploy as printed above)
    CVAT labels      cvat_labels.json  (paste into the CVAT project's Raw label editor)
  reef numbers       $STATS_DIR  (cover.csv, colonies.csv, groups.csv, CoralNet CSVs, figures/)
  report             $STATS_DIR/report.html  (open it in a browser: predicted and annotated cover side by side)
  annotation loop    $LOOP_DIR  (round_1/ranking.csv, round_1/cvat_round_1.zip for CVAT, rounds.csv, rounds.png)
    its dataset      $POOL  (FiftyOne: tag round_1, saved view round_1, corrections in polylines)
DONE

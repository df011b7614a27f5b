#!/usr/bin/env bash
# The built-in example, end to end on CPU: every stage of the workflow that exists
# runs on the synthetic reef dataset `reef_demo_fo`. Run through `make demo`
# (which sets up .venv first) or inside an environment that has the project.
set -euo pipefail
cd "$(dirname "$0")"
export FIFTYONE_DO_NOT_TRACK="${FIFTYONE_DO_NOT_TRACK:-true}"

DATASET=reef_demo_fo
DATA_ROOT="${CORAL_DATA_ROOT:-data/prepared_for_training}"
PREPARED="$DATA_ROOT/reef_demo"

step() { printf '\n==> %s\n' "$*"; }

step "1/2 Create the synthetic reef dataset in FiftyOne ($DATASET)"
python -m dataset.reef_demo --name "$DATASET"

step "2/2 Prepare it for MMSegmentation (prepare_data.py)"
# The demo owns its output folder, so it replaces it on every run.
python prepare_data.py "$DATASET" --image-size 256 --data-root "$DATA_ROOT" --overwrite

cat <<DONE

Demo finished. Outputs:
  FiftyOne dataset   $DATASET  (python -c "import fiftyone as fo; print(fo.load_dataset('$DATASET'))")
  prepared dataset   $PREPARED  (images/, annotations/, classes.txt, palette.txt, dataset_info.py, manifest.csv)
DONE

#!/usr/bin/env bash
# The command-line path for data that does not fit in memory:
#   CSV  --bigrfm convert-->  Zarr store  --bigrfm fit-->  model folder  --> predict / evaluate
#
# Every step streams the data block by block, so the same commands work on a
# CSV of many gigabytes. Here the data is scikit-learn's bundled diabetes
# dataset (442 patients, 10 features, a disease-progression score to predict),
# so the whole script runs in well under a minute.
#
# Needs: pip install 'bigrfm[io]'   (pandas reads the CSV)
# Run:   bash examples/02_out_of_core_cli.sh
# Keep the files: BIGRFM_WORKDIR=some/folder bash examples/02_out_of_core_cli.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
if [[ -n "${BIGRFM_WORKDIR:-}" ]]; then
    workdir="$BIGRFM_WORKDIR"
    mkdir -p "$workdir"
else
    workdir="$(mktemp -d "${TMPDIR:-/tmp}/bigrfm-example-XXXXXX")"
    trap 'rm -rf "$workdir"' EXIT
fi
cd "$workdir"
echo "== working in $workdir"

# 1. A real dataset as CSV: 10 named feature columns and a "target" column.
#    The target is written with a decimal point ("151.0"): convert stores it as
#    float, and fit then treats the task as regression (integer or text targets
#    are class labels unless you pass fit --task regression).
"$PYTHON" -c "
from sklearn.datasets import load_diabetes
import numpy as np
d = load_diabetes()
np.savetxt('data.csv', np.column_stack([d.data, d.target]), delimiter=',',
           header=','.join(list(d.feature_names) + ['target']), comments='', fmt=['%.8g'] * 10 + ['%.1f'])
"
echo "== data.csv: $(($(wc -l < data.csv) - 1)) rows"

# 2. CSV -> Zarr. 10% of the rows (seeded) go to X_val/y_val, which fit uses
#    to choose the best RFM iteration. --dtype float64 keeps the values exactly.
bigrfm convert data.csv data.zarr --target target --val-fraction 0.1 --dtype float64
bigrfm info data.zarr

# 3. Fit: iteration 0 is plain kernel ridge; each of the 3 iterations learns a
#    new metric M from the model's gradients. By default the passes run on an
#    in-process Dask LocalCluster; --scheduler tcp://host:port uses a cluster.
bigrfm fit data.zarr --out model --iters 3

# 4. What did it learn? Features ranked by the diagonal of M.
bigrfm features model --top 5

# 5. Predictions for every row, written as a Zarr store (streamed too).
#    For data this small, --scheduler threads (no cluster) starts faster.
bigrfm predict model data.zarr --out pred.zarr --scheduler threads
"$PYTHON" -c "
import zarr
p = zarr.open_group('pred.zarr', mode='r')['y_pred']
print('first predictions:', [round(float(v), 1) for v in p[:5]])
"

# 6. RMSE and R^2 on the training rows and on the held-out validation rows.
#    (A real project would convert a separate test file and evaluate on it.)
echo "== evaluate on the training rows"
bigrfm evaluate model data.zarr --scheduler threads
echo "== evaluate on the validation rows"
bigrfm evaluate model data.zarr --split val --scheduler threads

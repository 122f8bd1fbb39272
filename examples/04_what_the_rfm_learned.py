"""What did the RFM learn? Ranked features and a heatmap of the learned metric M.

An RFM learns a d x d matrix M, the average gradient outer product of its own
predictor: M_ij = mean over the data of (df/dx_i)(df/dx_j). Its diagonal says
how strongly the prediction reacts to each feature; its top eigenvectors are
the combinations of features it reacts to most. Here: breast cancer diagnosis
from 30 named cell-nucleus measurements (bundled with scikit-learn).

Run:  python examples/04_what_the_rfm_learned.py [--out M.png]   (~10 s)
The heatmap needs matplotlib (pip install 'bigrfm[plot]'); without it the
script prints the report and skips the picture. Same report from the command
line, for a saved model:  bigrfm features MODEL_DIR --plot M.png
"""

import argparse

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from bigrfm import RFMClassifier
from bigrfm.exceptions import InputError
from bigrfm.report import feature_report, plot_metric

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="breast_cancer_M.png", help="where to write the heatmap of M (PNG)")
parser.add_argument("--top", type=int, default=10, help="how many ranked features to print")
args = parser.parse_args()

# 1. Pass a DataFrame: the model remembers the column names (feature_names_in_)
#    and the report uses them. (as_frame=True needs pandas.)
data = load_breast_cancer(as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(data.data, data.target, test_size=0.25, stratify=data.target, random_state=0)
model = RFMClassifier(iters=3, random_state=0).fit(X_train, y_train)
print(f"test accuracy {model.score(X_test, y_test):.4f}; chosen iteration {model.best_iter_} (0 = plain kernel, M = I)")

# 2. The report is plain data (dicts and lists; json.dumps works on it).
report = feature_report(model, top=args.top)

print(f"\nTop {args.top} features by diag(M)  (importance = diag(M)_i / trace(M)):")
for f in report["features"]:
    bar = "#" * round(100 * f["importance"])
    print(f"{f['rank']:>3}. {f['name']:<25} {f['importance']:.3f} {bar}")

print("\nMain directions of M (unit eigenvectors: share of trace, biggest loadings):")
for e in report["eigenvectors"][:3]:
    loads = ", ".join(f"{ld['value']:+.2f} {ld['name']}" for ld in e["loadings"])
    print(f"  {e['rank']}. {e['fraction']:6.1%}  {loads}")
# A large share for direction 1 means the prediction mostly varies along that one
# combination of measurements (features are standardized, so loadings compare).
first = report["eigenvectors"][0]["fraction"]
print(f"\nThe first direction holds {first:.0%} of M's trace.")

# 3. The heatmap. Red = positive entries, blue = negative: features whose
#    gradients move together (or against each other).
try:
    path = plot_metric(model, args.out)
    print(f"\nwrote the heatmap of M to {path}")
except InputError as exc:  # matplotlib missing: the report above is still useful
    print(f"\nskipped the heatmap: {exc}")

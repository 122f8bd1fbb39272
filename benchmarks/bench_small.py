"""Fit time and test accuracy of bigrfm (defaults, iters=5, exact) next to xRFM on digits and breast cancer,
same splits (stratified 60/20/20, seeds 0-2), same process; median of 3 fits.

    /work/venv-xrfm/bin/python benchmarks/bench_small.py   # a venv with xrfm and bigrfm (see benchmarks/README.md)
"""
import sys, time, numpy as np
sys.path.insert(0, __import__("os").path.dirname(__file__)); import datasets
from sklearn.preprocessing import StandardScaler
from bigrfm import RFMClassifier
from xrfm import xRFM
rows = []
for name in ("digits", "breast_cancer"):
    for seed in (0, 1, 2):
        d = datasets.load(name, seed=seed)
        res = {}
        for lib in ("bigrfm", "xrfm"):
            ts, accs = [], []
            for rep in range(3):
                t = time.perf_counter()
                if lib == "bigrfm":
                    m = RFMClassifier(iters=5, random_state=seed).fit(d["X_train"], d["y_train"], d["X_val"], d["y_val"])
                    ts.append(time.perf_counter() - t); acc = m.score(d["X_test"], d["y_test"])
                else:
                    s = StandardScaler().fit(d["X_train"])
                    m = xRFM(device="cpu", random_state=seed, verbose=False).fit(s.transform(d["X_train"]), d["y_train"], s.transform(d["X_val"]), d["y_val"])
                    ts.append(time.perf_counter() - t); acc = float(np.mean(m.predict(s.transform(d["X_test"])).ravel() == d["y_test"]))
            res[lib] = (np.median(ts), acc)
        rows.append((name, seed, res))
        print(name, seed, res, flush=True)
print("| dataset | seed | bigrfm fit s | bigrfm acc | xRFM fit s | xRFM acc |\n|---|---|---|---|---|---|")
for name, seed, r in rows:
    print(f"| {name} | {seed} | {r['bigrfm'][0]:.2f} | {r['bigrfm'][1]:.4f} | {r['xrfm'][0]:.2f} | {r['xrfm'][1]:.4f} |")

"""Validation-guided exploration of bigrfm Nystrom fits on flights-3m at 200k training rows or diamonds (bigrfm only).

    python benchmarks/tune_flights.py BANDWIDTHS REGS ITERS CENTERS [DATASET]
    python benchmarks/tune_flights.py 1,3,10 1e-3,1 0 2000
    python benchmarks/tune_flights.py 10 1e-3 4 15000 diamonds

Prints, per configuration, the validation RMSE of each iteration (flights: minutes of
delay; diamonds: log price), the CG iterations and final relative residual per solve, the test
RMSE of the chosen iteration and the seconds. Choose by validation, not test. DATASET is
``flights`` (default; float32, two Dask workers) or ``diamonds`` (all 32,364 training rows,
float64 and the default scheduler, as run.py fits it).
"""
import sys, time, numpy as np
sys.path.insert(0, __import__("os").path.dirname(__file__)); import datasets
from bigrfm import RFMRegressor
DATA = sys.argv[5] if len(sys.argv) > 5 else "flights"
D = datasets.load_flights(n_train=200000) if DATA == "flights" else datasets.load_diamonds()
extra = dict(dtype="float32", n_workers=2) if DATA == "flights" else {}
sd = D["y_train"].std()
for L in [float(a) for a in sys.argv[1].split(",")]:
    for reg in [float(a) for a in sys.argv[2].split(",")]:
        t=time.time()
        m = RFMRegressor(bandwidth=L, reg=reg, iters=int(sys.argv[3]), solver="nystrom", n_centers=int(sys.argv[4]), cg_maxiter=20, random_state=0, **extra)
        m.fit(D["X_train"], D["y_train"], D["X_val"], D["y_val"])
        rm = np.sqrt(np.mean((m.predict(D["X_test"]) - D["y_test"])**2))
        val = [float(f"{np.sqrt(h['val_mse']) * sd:.4g}") for h in m.history_]
        print(f"L={L} reg={reg} best={m.best_iter_} val_rmse={val} cg={[h['solver']['cg_iters'] for h in m.history_]} res={[round(h['solver']['cg_residual'],3) for h in m.history_]} test_rmse={rm:.4g} {time.time()-t:.0f}s", flush=True)

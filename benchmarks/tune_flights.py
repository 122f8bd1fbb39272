"""Validation-guided exploration of bigrfm on flights-3m at 200k training rows (bigrfm only).

    python benchmarks/tune_flights.py BANDWIDTHS REGS ITERS CENTERS
    python benchmarks/tune_flights.py 1,3,10 1e-3,1 0 2000

Prints, per configuration, the validation RMSE of each iteration (minutes of
delay), the CG iterations and final relative residual per solve, the test
RMSE of the chosen iteration and the seconds. Choose by validation, not test.
"""
import sys, time, numpy as np
sys.path.insert(0, __import__("os").path.dirname(__file__)); import datasets
from bigrfm import RFMRegressor
D = datasets.load_flights(n_train=200000)
sd = D["y_train"].std()
for L in [float(a) for a in sys.argv[1].split(",")]:
    for reg in [float(a) for a in sys.argv[2].split(",")]:
        t=time.time()
        m = RFMRegressor(bandwidth=L, reg=reg, iters=int(sys.argv[3]), solver="nystrom", n_centers=int(sys.argv[4]), cg_maxiter=20, dtype="float32", random_state=0, n_workers=2)
        m.fit(D["X_train"], D["y_train"], D["X_val"], D["y_val"])
        rm = np.sqrt(np.mean((m.predict(D["X_test"]) - D["y_test"])**2))
        print(f"L={L} reg={reg} best={m.best_iter_} val_rmse={[round(np.sqrt(h['val_mse'])*sd,2) for h in m.history_]} cg={[h['solver']['cg_iters'] for h in m.history_]} res={[round(h['solver']['cg_residual'],3) for h in m.history_]} test_rmse={rm:.2f} {time.time()-t:.0f}s", flush=True)

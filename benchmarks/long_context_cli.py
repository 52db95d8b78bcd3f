"""`pyattn attribute` and `pyattn.explain` on a ModernBERT-base-shaped
classifier at 8,192 tokens, on this machine, within the default memory budget
(issue 18's end-to-end check).

The model is `benchmarks/qk_models.py`'s (ModernBERT-base's config, random
seeded weights, saved once to a folder with a word-level tokenizer of its
vocabulary size, made here: no download); the document is 8,190 seeded random
words, so that it encodes to exactly N tokens with [CLS] and [SEP]. Each
command runs in its own process; the parent reads that process's wall time and
peak RSS (``os.wait4``'s ``ru_maxrss``: model loading included).

- ``pyattn attribute``: the command as a user types it, every default kept
  (``--steps auto``, the default ``--memory-budget``, ``--attention-route
  auto``, which takes the q/k route for ModernBERT).
- ``pyattn.explain``: the one-document call, defaults kept except
  ``faithfulness`` (see ``--faithfulness``: AOPC at 8k tokens is dozens of
  further forward passes of the model, the same for any tool; the row says
  which ran).

Full run (the lead, on a quiet machine):
    OMP_NUM_THREADS=2 python benchmarks/long_context_cli.py
Check at tiny size (seconds; a temporary folder, not results/):
    OMP_NUM_THREADS=1 python benchmarks/long_context_cli.py --tiny
Tables (results/long_context_cli.json/.md, and the README's between its
long_context_cli markers; with --out only that folder) again from a run's
JSON, e.g. one run into --out:
    python benchmarks/long_context_cli.py --render build/run/long_context_cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
sys.path.insert(0, HERE)

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # ids 0..4, as qk_models' config expects (pad 0, cls 1, sep 2)


def save_model(folder: str, n: int, tiny: bool) -> tuple[str, str]:
    """The seeded ModernBERT and a word-level tokenizer of its vocabulary,
    saved as a user's fine-tuned model would be; returns the document and the
    route ``attention_route="auto"`` takes for the model."""
    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    from pyattn.model_attention import attention_route
    from qk_models import build

    model = build("modernbert-base", n, tiny)
    size = model.config.vocab_size
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    vocab.update({f"w{index}": index for index in range(len(SPECIALS), size)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                        unk_token="[UNK]", mask_token="[MASK]", model_max_length=max(8192, n))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rng = np.random.default_rng(2)
    return " ".join(f"w{index}" for index in rng.integers(len(SPECIALS), size, n - 2)), attention_route(model)


def measured(name: str, command: list[str], cwd: str) -> dict:
    """Run ``command``; its wall time, peak RSS and last line."""
    start = time.perf_counter()
    with open(os.path.join(cwd, f"{name}.log"), "w") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    with open(os.path.join(cwd, f"{name}.log")) as log:
        lines = [line.strip() for line in log if line.strip()]
    return {"name": name, "exit_code": os.waitstatus_to_exitcode(status), "seconds": wall,
            "peak_rss_bytes": usage.ru_maxrss * 1024, "last_line": (lines[-1] if lines else "")[:300]}


EXPLAIN = """
import json, sys, torch, transformers as tf, pyattn
folder, faithfulness = sys.argv[1], sys.argv[2] == "1"
model = tf.AutoModelForSequenceClassification.from_pretrained(folder).eval()
tokenizer = tf.AutoTokenizer.from_pretrained(folder)
text = open(folder + "/document.txt").read()
result = pyattn.explain(model, tokenizer, text, faithfulness=faithfulness)
a = result.attribution
print(json.dumps({"tokens": len(result.tokens), "n_steps": a.n_steps,
                  "converged": bool(a.converged), "relative_error": float(a.relative_error), "views": list(result.attention)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=None, help="document length in tokens (default 8192; --tiny: 256)")
    parser.add_argument("--faithfulness", action="store_true", help="explain with faithfulness=True (its default; slow at 8k)")
    parser.add_argument("--only", choices=("attribute", "explain"), default=None)
    parser.add_argument("--tiny", action="store_true", help="a tiny model: checks the script, measures nothing real")
    parser.add_argument("--out", default=None, help="folder for long_context_cli.json/.md (default: benchmarks/results; --tiny: a temporary folder)")
    parser.add_argument("--render", metavar="JSON", default=None,
                        help="only write results/long_context_cli.md (and the README table) from a run's long_context_cli.json")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as handle:
            report = json.load(handle)
        write(report, args.out or RESULTS, readme=not report["tiny"] and args.out is None)
        return
    n = args.tokens or (256 if args.tiny else 8192)
    out = args.out or (tempfile.mkdtemp(prefix="long_context_cli-") if args.tiny else RESULTS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="long_context_cli-work-") as work:
        folder = os.path.join(work, "model")
        text, route = save_model(folder, n, args.tiny)
        with open(os.path.join(folder, "document.txt"), "w") as handle:
            handle.write(text)
        with open(os.path.join(work, "docs.jsonl"), "w") as handle:
            handle.write(json.dumps({"text": text}) + "\n")
        if args.only in (None, "attribute"):
            command = [sys.executable, "-m", "pyattn.cli", "attribute", "--model", folder, "--data", "docs.jsonl",
                       "--label-column", "", "--out", "store", "--verbose"]
            row = measured("pyattn attribute", command, work)
            row["command"] = "pyattn attribute --model MODEL --data docs.jsonl --label-column '' --out store --verbose"
            if row["exit_code"] == 0:
                from pyattn.pipeline.records import read_records

                record = read_records(os.path.join(work, "store")).iloc[0]
                row.update({key: (record[key].item() if hasattr(record[key], "item") else record[key])
                            for key in ("n_steps", "converged", "relative_error") if key in record.index})
                row["tokens"] = len(record["tokens"])
                row["route"] = route  # what --attention-route auto takes for this model
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
        if args.only in (None, "explain"):
            row = measured("pyattn.explain", [sys.executable, "-c", EXPLAIN, folder, "1" if args.faithfulness else "0"], work)
            row["command"] = f"pyattn.explain(model, tokenizer, text, faithfulness={args.faithfulness})"
            if row["exit_code"] == 0:
                row.update(json.loads(row.pop("last_line")), route=route)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
              "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tiny": args.tiny, "tokens": n, "rows": rows}
    write(report, out, readme=not args.tiny and args.out is None)


def table(report: dict) -> str:
    """The results page's table, from a run's JSON."""
    from pyattn.attribution.memory import DEFAULT_MEMORY_CAP

    n = report["tokens"]
    lines = ["<!-- generated by benchmarks/long_context_cli.py from long_context_cli.json; do not edit by hand -->", "",
             f"ModernBERT-base's config (random, seeded), one document of {n:,} tokens; {report['machine']}; run of {report['when']}"
             f"{' (TINY check run)' if report['tiny'] else ''}. Peak RSS: the whole process, model loading included; "
             f"the default memory budget is {DEFAULT_MEMORY_CAP / 1e9:g} GB ({DEFAULT_MEMORY_CAP / 2**30:.2f} GiB) for the whole process.", "",
             "| call | exit | time | peak RSS | integration steps | converged | completeness error | route |", "|---|---:|---:|---:|---:|---|---:|---|"]
    for row in report["rows"]:
        error = row.get("relative_error")
        lines.append(f"| `{row['command']}` | {row['exit_code']} | {row['seconds']:.0f} s | {row['peak_rss_bytes'] / 2**30:.2f} GiB | "
                     f"{row.get('n_steps', '')} | {row.get('converged', '')} | {'' if error is None else f'{error:.2g}'} | "
                     f"{row.get('route', '')} |")
    return "\n".join(lines) + "\n"


def write(report: dict, out: str, readme: bool) -> None:
    """long_context_cli.json and .md into ``out``; with ``readme``, the table
    into the README between its long_context_cli markers too."""
    from qk_models import update_readme

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "long_context_cli.json"), "w") as handle:
        json.dump(report, handle, indent=1, default=str)
    text = table(report)
    with open(os.path.join(out, "long_context_cli.md"), "w") as handle:
        handle.write(text)
    if readme:
        update_readme(text, "<!-- long_context_cli:start -->", "<!-- long_context_cli:end -->")
    print(f"-> {os.path.join(out, 'long_context_cli.md')}")


if __name__ == "__main__":
    main()

"""HTML reports: escaped, complete, and (where Chromium is installed) rendered
without console errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import pyattn
from pyattn.report import bertviz_head_view_data, document_report

HOSTILE = ["<s>", "Ġhello", "<script>alert('x')</script>", "Ġ&amp;", 'Ġ"quoted"', "Ġworld", "</s>"]


def test_tokens_are_escaped(tmp_path):
    rng = np.random.default_rng(0)
    path = document_report(
        tmp_path / "hostile.html",
        HOSTILE,
        rng.normal(size=7),
        {"final": rng.random(7)},
        title="<b>title</b>",
        facts={"label": "<i>x</i>"},
        special_tokens=["<s>", "</s>"],
    )
    html = open(path, encoding="utf-8").read()
    assert "<script>alert" not in html and "&lt;script&gt;alert(" in html
    assert "<b>title</b>" not in html and "&lt;b&gt;title&lt;/b&gt;" in html
    assert "<i>x</i>" not in html
    assert "&amp;amp;" in html  # a literal "&amp;" token stays literal
    assert html.count("data:image/png;base64,") == 1


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    model, tokenizer = pyattn.load_demo()
    document = [d for d in pyattn.demo_documents("test", n=20) if len(d.text.split()) < 400][0]
    scores = pyattn.attribute(model, tokenizer, document.text)
    attention = pyattn.attention(model, tokenizer, document.text, per_head=True)
    per_head = attention.received.per_layer[:, 0]  # (L, H, N)
    path = document_report(
        tmp_path_factory.mktemp("report") / "document.html",
        scores.tokens,
        scores.scores,
        {"final": per_head[-1].sum(0), "all": per_head.sum((0, 1))},
        title="demo document",
        facts={"label": document.label_name, "predicted": pyattn.demo.LABELS[scores.predicted_label], "steps": scores.n_steps},
        special_tokens=tokenizer.all_special_tokens,
        per_layer=[layer.sum(0) for layer in per_head],
        per_head=per_head[-1].numpy(),
        head_importance=np.random.default_rng(1).random((3, 4)),
    )
    return path, attention, scores


def test_demo_report_has_everything(demo_report):
    path, _, scores = demo_report
    html = open(path, encoding="utf-8").read()
    assert html.count("data:image/png;base64,") == 4
    assert "spearman_rho" in html and "supporting the prediction" in html and "opposing the prediction" in html
    assert "most attention received (final)" in html
    assert html.count("<mark") == 2 * len(scores.tokens)


def test_bertviz_export(demo_report):
    _, attention, scores = demo_report
    layers = [attention.dense(layer=l) for l in (0, 1, 2)]
    data = bertviz_head_view_data(layers, scores.tokens)
    assert len(data["attention"]) == 3 and data["attention"][0].shape == (1, 4, len(scores.tokens), len(scores.tokens))
    assert data["tokens"][1] == scores.tokens[1].replace("Ġ", "")
    with pytest.raises(ValueError, match="layer 0: expected a"):
        bertviz_head_view_data([torch.zeros(1, 4, 3, 3)], scores.tokens)


def test_bertviz_accepts_the_export(demo_report):
    bertviz = pytest.importorskip("bertviz", reason="bertviz is optional (installed by the test extras)")
    _, attention, scores = demo_report
    data = bertviz_head_view_data([attention.dense(layer=l) for l in (0, 1, 2)], scores.tokens)
    html = bertviz.head_view(data["attention"], data["tokens"], html_action="return")
    assert len(html.data) > 1000 and data["tokens"][2] in html.data


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_report_renders_in_headless_chromium(demo_report, tmp_path):
    path, _, _ = demo_report
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    result = subprocess.run([CHROMIUM, *flags, "--window-size=1400,1800", f"--screenshot={shot}", f"file://{os.path.abspath(path)}"],
                            capture_output=True, text=True, timeout=120)
    assert shot.exists(), result.stderr[-2000:]
    console_errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and re.search(r"error", line, re.I)]
    assert not console_errors, console_errors
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # not blank: text, heat maps, plots


def test_attention_colours_span_the_scale_on_the_demo_document(demo_report):
    # the attention strip of ordinary tokens uses at least 80% of its lightness range (white 100% .. full 50%);
    # value / max, the old scale, used about a fifth of it on this document
    path, _, scores = demo_report
    html = open(path, encoding="utf-8").read()
    strips = re.findall(r'<span class="tok( special)?"[^>]*><mark class="attribution"[^>]*>.*?</mark><mark class="attention" style="background-color: ([^"]+)">', html)
    assert len(strips) == len(scores.tokens)
    lightness = [int(re.match(r"hsl\(210, 80%, (\d+)%\)", color).group(1)) for special, color in strips if not special]
    assert (max(lightness) - min(lightness)) >= 0.8 * 50


def test_tokens_show_as_text_and_numbers_scale():
    from pyattn.report import render_document

    html = render_document(["<s>", "Ġna", "Ã¯", "ve", "Ġ", "â", "Ģ", "Ķ", "</s>"], [0.0, 1e-6, -2e-6, 0.0, 0.0, 0.0, 0.0, 3e-7, 0.0],
                           {"all": [5.0, 1.0, 2.0, 3.0, 1.5, 1.2, 1.1, 1.3, 4.0]}, special_tokens=["<s>", "</s>"], plots=False)
    marks = re.findall(r'<mark class="attribution"[^>]*>(.*?)</mark>', html)
    assert marks[1:4] == ["na", "ï", "ve"] and marks[7] == "—"  # "naïve", "—" decoded from byte-level BPE
    assert "<td>—</td>" in html and "<td>Ķ</td>" not in html  # the token tables show the decoded text too
    assert "-0.000" not in html and "e-06" in html  # small attributions in scientific notation, never -0.000

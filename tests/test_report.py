"""The HTML report: content, escaping, embedded images, and a real browser render."""

import base64
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from medmix_sklearn.report import render_report, write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
_IMG_RE = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
NASTY = '<script>alert("x")</script> & co'
FINGERPRINT = "f" * 12 + "0123456789abcdef" * 3 + "e" * 4


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 + 0.35 * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    weak = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    availability = pd.DataFrame({
        "xray": rng.random(n) > 0.3, "report": rng.random(n) > 0.3, "labs": np.ones(n, bool),
    })
    modality = availability.to_numpy() * rng.random((n, 3))
    modality /= modality.sum(axis=1, keepdims=True)
    gate = rng.random(n)
    weights = pd.DataFrame({
        "expert_weight__xray__efficientnet_lite0": gate,
        "expert_weight__xray__efficientnet_lite1": 1 - gate,
        "expert_weight__report__all-MiniLM-L6-v2": 1.0,
        "expert_weight__labs__tabular": 1.0,
        "modality_weight__xray": modality[:, 0],
        "modality_weight__report": modality[:, 1],
        "modality_weight__labs": modality[:, 2],
    })
    robustness = pd.DataFrame({"MedMIX": [0.85, 0.8, 0.7], NASTY: [0.8, 0.7, 0.55]},
                              index=[0.0, 0.3, 0.6])
    card = {
        "experts": [{"modality": "xray", "name": "efficientnet_lite0",
                     "fingerprint": FINGERPRINT}],
        "training_data": {"n_samples": n, "missing_rate": {"xray": 0.3}},
        "note": NASTY,
    }
    return dict(y_true=y, proba={"MedMIX": good, NASTY: weak}, availability=availability,
                weights=weights, robustness=robustness, model_card=card, title=NASTY)


@pytest.fixture(scope="module")
def full_html():
    return render_report(**_data())


def _images(text):
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in _IMG_RE.findall(text)]


def test_every_embedded_png_decodes(full_html):
    images = _images(full_html)
    # ROC, calibration, robustness, availability patterns, weights
    assert len(images) == 5
    for image in images:
        image.load()
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100
    assert full_html.count("<img ") == 5


def test_all_sections_present(full_html):
    for anchor in ("summary", "roc", "calibration", "robustness", "patterns", "weights",
                   "model-card"):
        assert f'<section id="{anchor}">' in full_html
        assert f'href="#{anchor}"' in full_html
    assert f"<code>{FINGERPRINT}</code>" in full_html
    assert "efficientnet_lite0" in full_html and "efficientnet_lite1" in full_html
    assert "xray+report+labs" in full_html  # an availability pattern row


def test_text_is_escaped_and_page_is_self_contained(full_html):
    assert "<script" not in full_html.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in full_html
    assert not re.search(r'(src|href)="(https?:)?//', full_html)
    assert "<link" not in full_html.lower()
    assert "@import" not in full_html


def test_metric_values_match_sklearn():
    data = _data()
    text = render_report(y_true=data["y_true"], proba=data["proba"]["MedMIX"])
    expected = roc_auc_score(data["y_true"], data["proba"]["MedMIX"])
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert f"<td class=\"num\">{expected:.3f}</td>" in summary
    # Only what was given: no pattern, weight, robustness or card sections.
    for anchor in ("robustness", "patterns", "weights", "model-card"):
        assert f'id="{anchor}"' not in text
    assert len(_images(text)) == 2


def test_multiclass_and_explicit_classes():
    rng = np.random.default_rng(1)
    y = np.array(["a", "b", "c"] * 30)
    p = rng.dirichlet(np.ones(3), size=90)
    p[np.arange(90), np.tile([0, 1, 2], 30)] += 0.4
    p /= p.sum(axis=1, keepdims=True)
    text = render_report(y_true=y, proba=p, classes=["a", "b", "c"])
    assert "micro-averaged one-vs-rest" in text
    expected = roc_auc_score(y, p, multi_class="ovr", labels=["a", "b", "c"])
    assert f"{expected:.3f}" in text


def test_pattern_with_one_class_shows_undefined_auroc():
    y = np.array([0, 1, 0, 1, 1, 1])
    p = np.array([0.2, 0.8, 0.4, 0.7, 0.9, 0.6])
    availability = pd.DataFrame({"xray": [True, True, True, True, False, False]})
    text = render_report(y_true=y, proba=p, availability=availability)
    table = text.split('<section id="patterns">')[1]
    row = re.search(r"<th>none</th>(.*?)</tr>", table).group(1)
    assert "–" in row  # the 'none' rows are all class 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(proba=np.zeros((5, 2))), r"shape \(5, 2\); expected \(6, 2\)"),
        (dict(proba=np.full(6, 0.5), classes=[0, 1, 2]), "is 1-d"),
        (dict(proba={}), "empty dict"),
        (dict(proba=np.full(6, 0.5), availability=pd.DataFrame({"x": [True] * 5})),
         "availability has 5 rows but y_true has 6"),
        (dict(proba=np.full(6, 0.5), classes=[0, 2]), r"labels \[1\] that are not in classes"),
        (dict(proba=np.array([0.5, np.nan, 0.5, 0.5, 0.5, 0.5])), r"non-finite values in rows \[1\]"),
    ],
)
def test_bad_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_report(y_true=np.array([0, 1, 0, 1, 0, 1]), **kwargs)


def test_write_report_writes_the_rendered_page(tmp_path):
    data = _data(60)
    path = write_report(tmp_path / "sub" / "report.html", **data)
    assert path == str(tmp_path / "sub" / "report.html")
    text = open(path, encoding="utf-8").read()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert len(_images(text)) == 5
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["report.html"]  # no temp left


_CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement("div");
  out.id = "medmix-check";
  out.textContent = JSON.stringify({
    n: imgs.length,
    ok: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length
  });
  document.body.appendChild(out);
});
</script>"""


def _render_in_chromium(html_text, folder):
    """Load a copy of the page (plus an image checker) in headless Chromium."""
    page = folder / "page.html"
    page.write_text(html_text.replace("</body>", _CHECK_SCRIPT + "</body>"), encoding="utf-8")
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={folder / 'profile'}", "--enable-logging=stderr",
        "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<div id="medmix-check">([^<]*)</div>', proc.stdout)
    assert match, "the page did not finish loading: " + proc.stderr[-2000:]
    check = json.loads(match.group(1).replace("&quot;", '"'))
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return check, console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`)")
def test_report_renders_in_headless_chromium(tmp_path, full_html):
    check, console = _render_in_chromium(full_html, tmp_path)
    assert console == []
    assert check == {"n": 5, "ok": 5}

    # The same harness catches a broken image and a script error.
    broken = full_html.replace(
        "</main>", '<img src="data:image/png;base64,AAAA"><script>no_such_function();</script></main>'
    )
    (tmp_path / "bad").mkdir()
    check, console = _render_in_chromium(broken, tmp_path / "bad")
    assert check == {"n": 6, "ok": 5}
    assert any("no_such_function" in line for line in console)


def test_robustness_accepts_robustness_curve_output():
    from medmix_sklearn.report._html import _robustness_table

    def curve(scores):
        rows = [{"mechanism": "mcar", "p": p, "repeat": 0, "fold": k, "score": s + 0.01 * k}
                for p, s in scores.items() for k in range(2)]
        return pd.DataFrame(rows)

    table = _robustness_table({"MedMIX": curve({0.0: 0.9, 0.5: 0.8}), "HGB": curve({0.0: 0.85, 0.5: 0.7})})
    assert list(table.columns) == ["MedMIX", "HGB"] and list(table.index) == [0.0, 0.5]
    assert table.loc[0.5, "HGB"] == pytest.approx(0.705)  # the mean over folds
    wide = pd.DataFrame({"MedMIX": [0.9, 0.8]}, index=[0.0, 0.5])
    pd.testing.assert_frame_equal(_robustness_table(wide), wide)
    html = render_report(y_true=[0, 1, 0, 1], proba={"m": np.array([0.2, 0.8, 0.4, 0.6])},
                         robustness={"m": curve({0.0: 0.9, 0.25: 0.8})})
    assert 'id="robustness"' in html and "0.805" in html
    with pytest.raises(TypeError, match="robustness_curve"):
        render_report(y_true=[0, 1], proba={"m": np.array([0.2, 0.8])}, robustness=[1, 2])

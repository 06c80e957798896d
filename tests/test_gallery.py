"""The cluster gallery and the learning curves: what they compute, and the page as a browser shows it."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SETTINGS
from PIL import Image

from xdc_core.config import build_config
from xdc_core.curves import panels, render_png
from xdc_core.gallery import (
    build_sections,
    frame_image,
    mel_image,
    order,
    render,
    summarize,
    typical_members,
)
from xdc_core.layout import RunLayout
from xdc_core.plots import plot_rows
from xdc_core.run import run


def decode_uri(uri: str) -> Image.Image:
    import base64

    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


# -- what the clusters hold ---------------------------------------------------------------------


def test_summaries_count_sizes_majority_and_purity_over_labelled_videos_only():
    assignments = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = np.array([5, 5, 1, 3, -1, -1, -1, -1, -1])  # cluster 2: no label known
    s = summarize(assignments, labels, k=4)
    assert [c.size for c in s] == [3, 2, 4, 0]
    assert (s[0].majority, s[0].purity) == (5, pytest.approx(2 / 3))
    assert (s[1].majority, s[1].purity) == (3, 1.0)  # its unlabelled video does not count against it
    assert (s[2].majority, s[2].purity) == (None, None) and s[3].purity is None
    assert all(c.purity is None for c in summarize(assignments, None, k=3))
    by_purity = [c.cluster for c in order(s, "purity")]
    assert by_purity == [1, 0, 2, 3]  # then unknown purity, larger first
    assert [c.cluster for c in order(s, "size")] == [2, 0, 1, 3]


def test_typical_members_are_nearest_the_centre_and_only_of_the_asked_clusters():
    rng = np.random.default_rng(0)
    centre = np.array([1.0, 0.0, 0.0])
    # cluster 1: one video exactly on its centre direction, the others spread around it
    spread = centre + rng.normal(0, 0.3, (9, 3))
    features = np.concatenate([rng.normal(0, 1, (5, 3)), spread, 3 * centre[None]])  # rows 0-4: cluster 0
    assignments = np.array([0] * 5 + [1] * 10)
    members = typical_members(features, assignments, [1], n=4)
    assert list(members) == [1] and len(members[1]) == 4
    assert members[1][0] == 14  # the on-centre video (scaled: the cosine ignores the norm) comes first
    assert set(members[1]) <= set(range(5, 15))


def test_a_thousand_clusters_cost_only_the_shown_thumbnails():
    """k=1024 on 20 000 videos: every cluster is listed, at most max_shown get thumbnails, and each
    video is read once whatever the number of clusterings it appears in."""
    rng = np.random.default_rng(1)
    n, k = 20_000, 1024
    index = np.arange(n) + 7  # video indices need not be row numbers
    labels = rng.integers(0, 50, n)
    clusterings = {name: (rng.normal(size=(n, 16)).astype(np.float32), rng.permutation(np.arange(n) % k))
                   for name in ("video", "audio")}
    reads: list[int] = []

    def read(video: int) -> tuple[np.ndarray, np.ndarray]:
        reads.append(video)
        return np.full((8, 8, 3), video % 256, np.uint8), np.full((4, 6), float(video))

    sections, _ = build_sections(clusterings, labels, index, {}, k, read, str, per_cluster=3, max_shown=10)
    assert [s.name for s in sections] == ["video", "audio"]
    for s in sections:
        assert len(s.clusters) == k and sorted(c.cluster for c in s.clusters) == list(range(k))
        assert len(s.shown) == 10 and all(len(t) == 3 for t in s.shown.values())
        assert list(s.shown) == [c.cluster for c in s.clusters[:10]]  # the first in display order
        for c, thumbs in s.shown.items():  # the shown videos are that cluster's
            rows = {t.video - 7 for t in thumbs}
            assert all(clusterings[s.name][1][r] == c for r in rows)
    assert len(reads) == len(set(reads)) <= 2 * 10 * 3


def test_images_keep_what_a_person_compares():
    frame = np.zeros((200, 100, 3), np.uint8)
    frame[:, :, 0] = 255
    img = decode_uri(frame_image(frame))
    assert img.format == "JPEG" and max(img.size) == 96 and img.size[0] < img.size[1]  # scaled down, same shape
    mel = np.zeros((40, 100))
    mel[:10] = 10.0  # the lowest mel bands are loud
    img = decode_uri(mel_image(mel, 0.0, 10.0)).convert("RGB")
    assert img.size == (100, 40)
    assert img.getpixel((50, 36))[1] > 200 and img.getpixel((50, 3))[1] < 20  # bright at the bottom, dark on top


def test_page_lists_every_cluster_escapes_text_and_loads_nothing_from_outside():
    rng = np.random.default_rng(2)
    n, k = 60, 5
    clusterings = {"joint": (rng.normal(size=(n, 4)), np.arange(n) % k)}
    labels = np.arange(n) % 2
    sections, mel_range = build_sections(
        clusterings, labels, np.arange(n), {"joint": {"sizes_min": 12, "purity": 0.5}}, k,
        lambda v: (np.zeros((4, 4, 3), np.uint8), np.zeros((3, 3))), lambda v: f"vid{v}", per_cluster=2, max_shown=3)
    page = render(4, "cdc", k, n, sections, ["<cats>", "dogs"], None, mel_range)
    assert page.count("<div class='cluster'") == 3 and page.count("<tr data-cluster=") == k
    assert "<cats>" not in page and "&lt;cats&gt;" in page
    assert "CDC clusters, iteration 4" in page and "Content-Security-Policy" in page
    sources = re.findall(r"\b(?:src|href)\s*=\s*['\"]([^'\"]*)", page)
    assert sources and all(s.startswith(("data:image/", "#")) for s in sources), sources
    anchors = set(re.findall(r"\bid='([^']+)'", page))
    assert {s[1:] for s in sources if s.startswith("#")} <= anchors  # every link lands


def test_curves_draw_a_panel_per_kind_of_statistic():
    iterations = [{"iteration": i, "clusters": {
        "video": {"purity": 0.3 + 0.1 * i, "nmi_labels": 0.2, "nmi_previous": None if i == 1 else 0.5,
                  "sizes_min": 3, "sizes_median": 5, "sizes_max": 9},
        "cross_modal": {"nmi": 0.1 * i, "nmi_chance": 0.05}},
        "train": {"video": {"train_loss": [2.0, 1.5], "val_loss": [2.1, 1.9]}}} for i in (1, 2, 3)]
    metrics = {"method": "xdc", "probe": {"video": {"top1": 0.8}}, "baseline_random": {"video": {"top1": 0.4}}}
    chart = panels(plot_rows(iterations, metrics))
    assert [p.title.split(" (")[0] for p in chart] == [
        "cluster quality", "video-audio cluster agreement", "cluster sizes", "pseudo-label loss", "linear probe top-1"]
    quality = {s.label: s.points for s in chart[0].series}
    assert quality["video purity"] == [(1, 0.4), (2, 0.5), (3, pytest.approx(0.6))]
    assert quality["video nmi previous"] == [(2, 0.5), (3, 0.5)]  # iteration 1 has no previous clusters
    assert [p[0] for p in chart[3].series[0].points] == list(range(1, 7))  # epochs counted over iterations
    assert chart[4].bars == [("video: XDC linear probe", 0.8), ("video: random init linear probe", 0.4)]
    png = Image.open(io.BytesIO(render_png(chart)))
    assert png.size == (960, 960)  # 5 panels in 2 columns
    colours = {c for _, c in png.convert("RGB").getcolors(1 << 20)}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # the first two series were drawn
    without_probe = panels(plot_rows(iterations, None))
    assert Image.open(io.BytesIO(render_png(without_probe))).size == (960, 640)


# -- a real run, as a person sees it in a browser -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_decoded, tmp_path_factory) -> Path:
    """Two XDC iterations on the tiny decoded sample (k=3, 12 pretraining videos, 2 classes)."""
    out = tmp_path_factory.mktemp("gallery") / "run"
    run(tiny_decoded, out, build_config(TINY_SETTINGS), evaluate=False, progress=False, log=lambda _: None)
    return out


def chromium() -> str:
    """The browser: $XDC_TEST_CHROMIUM (CI sets it, so a missing browser fails there), or chromium on PATH."""
    required = os.environ.get("XDC_TEST_CHROMIUM")
    found = required or shutil.which("chromium")
    if not found:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    assert Path(found).is_file(), f"XDC_TEST_CHROMIUM={required} does not exist"
    return found


def headless(*args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True)


# Loaded next to the gallery: a parent page reads the gallery's DOM from an iframe (the gallery's
# Content-Security-Policy forbids scripts in the gallery itself) and writes what it found into its own DOM.
HARNESS = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="g" src="gallery.html" style="width:1200px;height:900px"></iframe><script>
document.getElementById('g').addEventListener('load', () => {
  const w = document.getElementById('g').contentWindow, d = w.document;
  const images = [...d.images];
  document.getElementById('result').textContent = JSON.stringify({
    title: d.title,
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    sections: [...d.querySelectorAll('section[data-clustering]')].map(s => ({
      name: s.dataset.clustering,
      cards: [...s.querySelectorAll('.cluster')].map(c => Number(c.dataset.cluster)),
      rows: [...s.querySelectorAll('tr[data-cluster]')].map(r => Number(r.dataset.cluster)),
      thumbs: s.querySelectorAll('figure').length})),
    dangling: [...d.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
      .filter(h => !h.startsWith('#') || !d.getElementById(h.slice(1))),
    requests: w.performance.getEntriesByType('resource').map(e => e.name),
  });
});
</script></body></html>
"""


@pytest.mark.integration
def test_xdc_run_writes_a_gallery_per_iteration_and_the_curves(tiny_run):
    layout = RunLayout(tiny_run)
    for it in (1, 2):
        page = layout.gallery(it).read_text()
        stats = json.loads(layout.kmeans_stats(it).read_text())["clusters"]
        assert f"XDC clusters, iteration {it}" in page
        assert f"NMI {stats['cross_modal']['nmi']:.3f} (chance level {stats['cross_modal']['nmi_chance']:.3f})" in page
        assert layout.gallery(it).stat().st_size < 1_000_000
    assert "NMI with previous iteration</th>" in page and f"<td>{stats['video']['nmi_previous']:.3f}</td>" in page
    png = Image.open(layout.curves)
    assert png.format == "PNG" and png.size[1] >= 640  # cluster quality, agreement, sizes, loss


@pytest.mark.integration
def test_gallery_in_a_browser_shows_every_cluster_with_loaded_images(tiny_run, tmp_path):
    shutil.copyfile(RunLayout(tiny_run).gallery(2), tmp_path / "gallery.html")
    (tmp_path / "harness.html").write_text(HARNESS)
    dom = headless("--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                   (tmp_path / "harness.html").as_uri()).stdout
    found = json.loads(html.unescape(re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL).group(1)))
    assert found["title"] == "XDC clusters, iteration 2"
    k = TINY_SETTINGS["cluster"]["k"]
    assignments = np.load(RunLayout(tiny_run).clusters(2))
    assert [s["name"] for s in found["sections"]] == ["video", "audio"]
    for s in found["sections"]:
        assert sorted(s["cards"]) == sorted(s["rows"]) == list(range(k)), s  # every cluster, shown and listed
        sizes = np.bincount(assignments[s["name"]], minlength=k)
        assert s["thumbs"] == sum(min(6, int(n)) for n in sizes)  # 6 per cluster, fewer in a smaller one
    assert found["images"] == 2 * sum(s["thumbs"] for s in found["sections"])  # a frame and a log-mel each
    assert found["broken"] == [] and found["dangling"] == [] and found["requests"] == []

    shot = tmp_path / "gallery.png"
    headless("--window-size=1100,900", f"--screenshot={shot}", (tmp_path / "gallery.html").as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 900)
    assert len(img.resize((110, 90)).getcolors(1 << 16)) > 50  # thumbnails rendered, not a blank page


@pytest.mark.integration
def test_step_command_writes_the_gallery_xdc_run_writes(tiny_run, tiny_decoded, tmp_path, capsys):
    """`xdc step kmeans --data --gallery` (the DVC stage) gives the page `xdc run` gave, byte for byte."""
    from xdc_cli.main import main

    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY_SETTINGS))  # YAML is a superset of JSON
    layout = RunLayout(tiny_run)
    args = ["step", "kmeans", "--config", str(config), "--iteration", "2",
            "--video-features", str(layout.features(2, "video")), "--audio-features", str(layout.features(2, "audio")),
            "--previous", str(layout.clusters(1)), "--out", str(tmp_path / "c.npz"),
            "--stats", str(tmp_path / "k.json")]
    assert main([*args, "--gallery", str(tmp_path / "g.html")]) == 2
    assert "--gallery needs --data" in capsys.readouterr().err
    assert main([*args, "--data", str(tiny_decoded), "--gallery", str(tmp_path / "g.html")]) == 0
    assert (tmp_path / "g.html").read_bytes() == layout.gallery(2).read_bytes()

"""``gpucal report``: one self-contained HTML page of a profile (``gpucal.figures.report``). Its structure, its
escaping of every text a profile holds, the default model, and the command's outputs; tests/cli/test_report_browser.py
renders it in headless Chromium."""

from __future__ import annotations

import copy
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import run_gpucal

from gpucal import profiles
from gpucal.figures.report import SECTIONS, default_model, report_html
from gpucal.plan.models import PRESETS

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span", "b", "section", "table",
        "tr", "th", "td", "ul", "li", "br", "figure", "img", "figcaption", "details", "summary", "pre"}
HOSTILE = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"


class _Page(HTMLParser):
    """Every element of a page, with its attributes, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def hostile_profile(tmp_path: Path) -> Path:
    """The calibrated fixture with markup and script in every text a profile lets it hold."""
    data = json.loads(FIXTURE.read_text())
    data["title"] = "T " + HOSTILE
    data["notes"] = ["N " + HOSTILE]
    data["devices"][0]["name"] = "D " + HOSTILE
    data["host"]["hostname"] = "H " + HOSTILE
    data["host"]["anomalies"] = [{"kind": "K " + HOSTILE, "text": "A " + HOSTILE}]
    data["links"][0]["reasons"] = ["R " + HOSTILE]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(data))
    profiles.load(str(path))  # a valid profile: the schema allows this text
    return path


def test_the_page_has_every_section_and_needs_nothing_outside_itself():
    text = report_html(profiles.load(str(FIXTURE)))
    page = parse(text)
    ids = [a.get("id") for tag, a in page.elements if tag == "section"]
    assert ids == list(SECTIONS)
    assert {tag for tag, _ in page.elements} <= TAGS  # no script, no iframe, no link, no object
    images = [a["src"] for tag, a in page.elements if tag == "img"]
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    policy = next(a["content"] for tag, a in page.elements if tag == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in policy and "script" not in policy
    title = next(t for t in page.text if "gpucal report" in t)
    assert "simulated" in title  # measured or simulated, in the title itself
    body = " ".join(page.text)
    assert "host-staged" in body and "no figure here is a measurement" in body
    assert "the article's step" in body and "measured step" in body  # the plan, both steps


def test_a_profiles_markup_is_shown_as_text_never_as_markup(tmp_path):
    text = report_html(profiles.load(str(hostile_profile(tmp_path))))
    page = parse(text)
    assert {tag for tag, _ in page.elements} <= TAGS
    assert not any(tag == "script" for tag, _ in page.elements)
    assert not any(any(k.startswith("on") for k in a) for _, a in page.elements)
    assert not any(tag == "img" and a.get("src") == "x" for tag, a in page.elements)
    shown = " ".join(page.text)
    for marker in ("T ", "N ", "D ", "H ", "K ", "A ", "R "):
        assert marker + HOSTILE in shown, marker  # the text itself, visible


def test_the_default_model_is_the_largest_preset_whose_weights_fit():
    one = profiles.load_builtin("profile", "rtx4090")
    chosen = default_model(one)
    memory = one.profile.devices[0].memory_bytes.value
    assert 2 * chosen.params <= 0.9 * memory
    assert all(2 * m.params > 0.9 * memory or m.params <= chosen.params for m in PRESETS.values())
    assert default_model(profiles.load(str(FIXTURE))).params > chosen.params  # two cards hold a larger one


def test_the_command_writes_once_and_keeps_a_file_without_force(tmp_path):
    out = tmp_path / "box.html"
    done = run_gpucal("report", str(FIXTURE), "-o", str(out), "--model", "llama-3.1-8b", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["file"] == str(out) and summary["model"] == "llama-3.1-8b" and summary["sections"] == list(SECTIONS)
    first = out.read_bytes()
    again = run_gpucal("report", str(FIXTURE), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr and out.read_bytes() == first
    assert run_gpucal("report", str(FIXTURE), "-o", str(out), "--force").returncode == 0
    wrong = run_gpucal("report", str(FIXTURE), "-o", str(tmp_path / "box.txt"))
    assert wrong.returncode == 2 and "FILE.html" in wrong.stderr
    default = run_gpucal("report", "h100-sxm", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "h100-sxm.html").is_file()


def test_the_roofline_shows_the_decode_gemms_at_their_intensity(tmp_path):
    out = tmp_path / "h200.json"
    done = run_gpucal("calibrate", "--simulate", "h200-sxm:1", "--quick", "-o", str(out))
    assert done.returncode == 0, done.stderr
    from gpucal.figures.roofline import decode_points, roofline_figure

    device = profiles.load(str(out)).profile.devices[0]
    points = decode_points(device)
    curve = device.decode.gemm["bf16"]
    assert len([p for p in points if p[2] == "bf16"]) == sum(len(r.points) for r in curve.rows)
    row = curve.rows[-1]
    weight_bytes, seconds = row.points[0]
    (n, k), = [s for s in curve.shapes if s[0] * s[1] * 2 == weight_bytes]
    flop = 2 * row.m * n * k
    assert (flop / (weight_bytes + row.m * (n + k) * 2), flop / seconds, "bf16") in points
    labels = roofline_figure(profiles.load(str(out))).axes[0].get_legend_handles_labels()[1]
    assert any(label.startswith("decode GEMM bf16") for label in labels)


def test_calibrate_writes_the_report_at_the_end_of_a_run_and_says_when_it_could_not(tmp_path):
    profile, page = tmp_path / "box.json", tmp_path / "box.html"
    done = run_gpucal("calibrate", "--simulate", "rtx4090:2", "--quick", "--no-kernel-check", "-o", str(profile),
                      "--report", str(page))
    assert done.returncode == 0, done.stderr
    assert f"wrote {page} (gpucal report)" in done.stdout
    text = page.read_text()
    assert "box" in text and all(f'<section id="{s}">' in text for s in SECTIONS)
    same = run_gpucal("calibrate", "--simulate", "rtx4090:2", "--quick", "-o", str(tmp_path / "p.html"),
                      "--report", str(tmp_path / "p.html"), "--force")
    assert same.returncode == 2 and "the profile's own file" in same.stderr
    assert not (tmp_path / "p.html").exists()


def test_a_report_that_fails_after_the_profile_keeps_the_summary(tmp_path, monkeypatch):
    from gpucal.commands.calibrate import outputs

    def fail(*args, **kwargs):
        raise outputs.GpucalError("--report: the disk is full")

    monkeypatch.setattr(outputs, "write_report", fail)
    from gpucal.cli import main

    code = main(["calibrate", "--simulate", "rtx4090:1", "--quick", "--no-kernel-check", "-o",
                 str(tmp_path / "one.json"), "--report", str(tmp_path / "one.html")])
    assert code == 1 and (tmp_path / "one.json").is_file() and not (tmp_path / "one.html").exists()


def _rows(text: str, section: str) -> list[list[str]]:
    """The table rows (cell texts) of one section of the page."""
    part = text.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", part, re.S):
        rows.append([re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", tr, re.S)])
    return rows


def test_the_plan_is_gpucal_plans_and_the_terms_say_their_sources():
    from gpucal.units import format_time

    doc = profiles.load(str(FIXTURE))
    text = report_html(doc, model="llama-3.1-8b")
    done = run_gpucal("plan", "--gpu", str(FIXTURE), "--model", "llama-3.1-8b", "--cards", "2", "--strategy", "tp",
                      "--batch", "8", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    row = next(r for r in _rows(text, "plan") if r[0] == "8")
    assert row[1] == format_time(plan["token_latency_s"])  # the measured step, as gpucal plan gives it
    assert row[3] == format_time(plan["seed"]["token_latency_s"])  # the article's beside it
    terms = {r[0]: r for r in _rows(text, "decode")}
    assert terms["tp comm time"][-1] == "the ideal term (no figure: see below)"  # no all-reduce measured here


def test_a_measured_all_reduce_is_the_tp_terms_source(tmp_path):
    out = tmp_path / "h200x2.json"
    assert run_gpucal("calibrate", "--simulate", "h200-sxm:2", "--quick", "-o", str(out)).returncode == 0
    terms = {r[0]: r for r in _rows(report_html(profiles.load(str(out)), model="llama-3.1-8b"), "decode")}
    assert terms["tp comm time"][-1].startswith("allreduce:"), terms["tp comm time"]
    assert terms["gemm time"][-1].startswith("gemm:") and terms["attention time"][-1].startswith("attention:")


def test_a_profile_without_a_datasheet_is_not_set_beside_itself_and_what_does_not_fit_is_said():
    text = report_html(profiles.load_builtin("profile", "seed-h100"))
    assert "Against the datasheet profile" not in text
    big = report_html(profiles.load_builtin("profile", "rtx4090"), model="llama-3.1-70b")
    assert all(r[-1].startswith("no") for r in _rows(big, "plan")[1:])  # 140 GB of weights on one 24 GB card

"""``gpucal report``'s page as a person sees it: rendered in headless Chromium (Debian's ``chromium``, installed by
.ci/run), it loads with no console message, shows every section, and every image decodes; a profile whose texts
carry ``<script>`` and HTML runs nothing and renders none of it as markup: as written (its content policy on) and,
to show that escaping alone does it, in a copy without the policy. Skipped where Chromium is not installed, except in CI (``GPUCAL_REQUIRE_CHROMIUM=1``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_gpucal

from gpucal.figures.report import SECTIONS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
HOSTILE = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"

if CHROMIUM is None:
    if os.environ.get("GPUCAL_REQUIRE_CHROMIUM") == "1":
        raise RuntimeError("GPUCAL_REQUIRE_CHROMIUM=1 but no chromium is installed")
    pytest.skip("chromium is not installed here", allow_module_level=True)

# A probe the test adds to a copy of the page (the page itself has no script): after load, it writes what the
# browser made of the page into the DOM, which --dump-dom prints.
PROBE = """<script>window.addEventListener('load', () => {
  const out = {title: document.title, sections: [...document.querySelectorAll('section')].map(s => s.id),
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    scripts: document.scripts.length, text: document.body.innerText.length};
  const node = document.createElement('pre'); node.id = 'gpucal-probe'; node.textContent = JSON.stringify(out);
  document.body.appendChild(node);
});</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _report(tmp_path: Path, profile: Path | str, name: str) -> Path:
    out = tmp_path / f"{name}.html"
    done = run_gpucal("report", str(profile), "-o", str(out), "--model", "llama-3.1-8b")
    assert done.returncode == 0, done.stderr
    return out


def _probed(page: Path) -> tuple[dict | None, str, str]:
    """A copy of the page without its content policy (which would block the probe too) and with the probe added,
    dumped after load: (what the probe saw, the DOM, the browser's log)."""
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text(encoding="utf-8"), count=1)
    probe = text.replace("</body>", PROBE + "</body>", 1)
    copy = page.with_name(page.stem + "-probed.html")
    copy.write_text(probe, encoding="utf-8")
    done = _chromium("--dump-dom", copy.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="gpucal-probe">(.*?)</pre>', done.stdout, re.S)
    seen = json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&")) if found else None
    return seen, done.stdout, done.stderr


def _console(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def test_the_page_loads_shows_every_section_and_every_image(tmp_path):
    page = _report(tmp_path, FIXTURE, "box")
    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    assert _console(done.stderr) == [], done.stderr  # the page as written: not one console message
    seen, _, log = _probed(page)
    assert seen is not None, log[-2000:]
    assert seen["sections"] == list(SECTIONS)
    assert len(seen["images"]) >= 4 and all(ok and w > 0 and h > 0 for ok, w, h in seen["images"]), seen["images"]
    assert seen["scripts"] == 1  # the probe alone
    assert seen["title"].startswith("gpucal report, simulated")
    assert [line for line in _console(log) if "gpucal-probe" not in line] == [], log


def test_a_hostile_profile_runs_nothing_and_renders_no_markup(tmp_path):
    data = json.loads(FIXTURE.read_text())
    data["title"] = "T " + HOSTILE
    data["notes"] = ["N " + HOSTILE]
    data["devices"][0]["name"] = "D " + HOSTILE
    data["host"]["hostname"] = "H " + HOSTILE
    data["links"][0]["reasons"] = ["R " + HOSTILE]
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(data))
    page = _report(tmp_path, hostile, "hostile")
    plain = _chromium("--dump-dom", page.as_uri())
    assert plain.returncode == 0 and re.search(r"<title>(.*?)</title>", plain.stdout, re.S)[1].startswith(
        "gpucal report")  # a script run would have made it PWNED
    assert _console(plain.stderr) == [], plain.stderr  # nothing tried to run, so no policy was even violated
    # escaping alone keeps it text: without the page's content policy, in the copy the probe reads
    seen, dom, log = _probed(page)
    assert seen is not None, log[-2000:]
    assert seen["title"].startswith("gpucal report") and seen["scripts"] == 1
    assert '<img src="x"' not in dom and "<script>document.title" not in dom
    assert "D &lt;script&gt;document.title" in dom  # shown as text

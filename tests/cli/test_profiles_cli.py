"""``gpucal profiles list|show|validate``."""

import json

from conftest import run_gpucal

from gpucal import profiles as profile


def test_list_shows_every_profile_link_and_model():
    out = run_gpucal("profiles", "list")
    assert out.returncode == 0, out.stderr
    for name in list(profile.builtin_names("profile")) + list(profile.builtin_names("link")) + ["llama-3.1-405b"]:
        assert name in out.stdout
    catalog = json.loads(run_gpucal("profiles", "list", "--json").stdout)
    assert {p["name"] for p in catalog["profiles"]} == set(profile.builtin_names("profile"))
    assert {l["name"] for l in catalog["links"]} == set(profile.builtin_names("link"))
    assert any(m["name"] == "seed-70b" and m["params"] == 70e9 for m in catalog["models"])


def test_show_gives_values_with_their_sources_and_the_document():
    out = run_gpucal("profiles", "show", "h100-sxm")
    assert out.returncode == 0, out.stderr
    for text in ("3.35 TB/s", "989.4 TFLOP/s", "datasheet (hopper-whitepaper)", "sparse fp16_fp32acc",
                 "nvlink: P2P, 450 GB/s per direction", "[h100-datasheet] NVIDIA H100 Tensor Core GPU datasheet",
                 "nvlink4"):
        assert text in out.stdout, text
    link = run_gpucal("profiles", "show", "seed-eth1g")
    assert "250 µs" in link.stdout and "125 MB/s" in link.stdout and "article" in link.stdout


def test_show_json_prints_the_document_itself(tmp_path):
    shown = json.loads(run_gpucal("profiles", "show", "rtx4090", "--json").stdout)
    assert shown == profile.load_builtin("profile", "rtx4090").data
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(shown))
    assert json.loads(run_gpucal("profiles", "show", str(path), "--json").stdout) == shown


def test_show_an_unknown_name():
    out = run_gpucal("profiles", "show", "h100sxm")
    assert out.returncode == 2 and "did you mean h100-sxm" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_validate_a_good_and_a_bad_file(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(run_gpucal("profiles", "show", "seed-h100", "--json").stdout)
    out = run_gpucal("profiles", "validate", str(good))
    assert out.returncode == 0 and "valid gpucal.profile/1" in out.stdout
    data = json.loads(good.read_text())
    data["devices"][0]["memory_bytes"]["value"] = None
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    out = run_gpucal("profiles", "validate", str(bad))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == (f"gpucal profiles: error: {bad}: devices[0].memory_bytes: "
                                  "'reason' is a required property")
    missing = run_gpucal("profiles", "validate", str(tmp_path / "none.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr

"""``gpucal.calibrate.compare``: rows, ratios B/A and sources, from the shipped profiles and the fixture."""

import json
from pathlib import Path

import pytest

from gpucal import profiles as profile
from gpucal.calibrate.compare import FLOPS_MODES, PlannerLink, compare, device_count, ratio

FIXTURE = Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"


def builtin(name):
    return profile.load_builtin("profile", name)


def test_ratio_is_b_over_a_and_none_where_undefined():
    assert ratio(2, 3) == 1.5
    assert ratio(4.0, 0.0) == 0.0
    assert ratio(0, 1) is None  # undefined
    assert ratio(None, 1) is None and ratio(1, None) is None
    assert ratio(True, False) is None and ratio("pcie4-x16", "nvlink4") is None


def test_datasheet_against_the_article_by_hand():
    c = compare(builtin("rtx4090"), builtin("seed-rtx4090"))
    bw = c.row("memory_bandwidth_Bps")
    assert (bw.a, bw.b) == (1.008e12, 1e12)
    assert bw.ratio == pytest.approx(1e12 / 1.008e12, rel=1e-15)
    assert (bw.a_source, bw.b_source, bw.unit) == ("datasheet", "article", "Bps")
    assert c.row("memory_bytes").ratio == pytest.approx(24e9 / 25769803776)
    assert c.row("dense_flops.fp16_fp16acc").ratio == pytest.approx(330e12 / 330.3e12)
    assert c.row("host_link.pcie_generation").ratio == 1.0
    assert c.row("device_count").a == c.row("device_count").b == 1


def test_a_mode_on_one_side_only_has_no_value_no_source_and_no_ratio():
    c = compare(builtin("rtx4090"), builtin("seed-rtx4090"))
    row = c.row("dense_flops.fp16_fp32acc")
    assert (row.a, row.a_source) == (165.2e12, "datasheet")
    assert (row.b, row.b_source, row.b_reason, row.ratio) == (None, None, None, None)
    # every dense mode either profile has, in the schema's order
    modes = [r.field.removeprefix("dense_flops.") for r in c.rows if r.field.startswith("dense_flops.")]
    assert modes == [m for m in FLOPS_MODES if m in builtin("rtx4090").profile.devices[0].dense_flops]


def test_rows_appear_only_where_either_profile_has_the_field():
    fields = {r.field for r in compare(builtin("rtx4090"), builtin("seed-rtx4090")).rows}
    assert not any(f.startswith(("gemv_Bps", "host_link.h2d", "theoretical")) for f in fields)
    assert "peer_link.bandwidth_Bps" not in fields and "host_link.pcie_width_max" not in fields
    assert "peer_link.bandwidth_Bps" in {r.field for r in compare(builtin("rtx4090"), builtin("h100-sxm")).rows}


def test_a_null_value_keeps_its_reason():
    row = compare(builtin("a100-sxm-80gb"), builtin("h100-sxm")).row("dense_flops.fp8_fp32acc")
    assert row.a is None and row.a_source == "datasheet" and "FP8" in row.a_reason
    assert row.b == 1978.9e12 and row.ratio is None


def test_the_simulated_fixture_against_its_datasheet():
    sim = profile.load(FIXTURE)
    c = compare(sim, builtin("rtx4090"))
    assert c.row("memory_bandwidth_Bps").ratio == pytest.approx(1.008e12 / 1.0079e12)
    assert c.row("dense_flops.fp16_fp32acc").ratio == pytest.approx(165.2e12 / 165.1e12)
    gemv = c.row("gemv_Bps.fp16")
    assert (gemv.a, gemv.a_source, gemv.b, gemv.ratio) == (1.0076e12, "simulated", None, None)
    assert c.row("theoretical_memory_bandwidth_Bps").a_source == "derived"
    h2d = c.row("host_link.h2d.beta_Bps")
    assert (h2d.a, h2d.a_source, h2d.b_source) == (26.15e9, "simulated", None)
    assert c.row("host_link.pcie_width_max").a == 16
    count = c.row("device_count")
    assert (count.a, count.b, count.ratio, count.a_source) == (2, 1, 0.5, "reported")
    assert device_count(sim.profile) == 2
    assert c.simulated("a") and not c.simulated("b")
    assert len(c.notes) == 1 and "A (sample-rtx4090x2) is simulated" in c.notes[0]
    assert "never a measurement" in c.notes[0]


def test_the_planners_links_and_a_zero_alpha():
    a_link = PlannerLink("seed-nvlink4", {"value": 0.0, "source": "article"}, {"value": 450e9, "source": "article"})
    b_link = PlannerLink("nvlink4", {"value": 3e-6, "source": "estimate"}, {"value": 450e9, "source": "datasheet"})
    c = compare(builtin("seed-h100"), builtin("h100-sxm"), a_link, b_link)
    assert c.row("planner_link.alpha_s").ratio is None  # B/0
    assert c.row("planner_link.beta_Bps").ratio == 1.0
    name = c.row("planner_link.name")
    assert (name.a, name.b, name.b_source, name.ratio) == ("seed-nvlink4", "nvlink4", "datasheet + estimate", None)
    one_sided = compare(builtin("seed-h100"), builtin("h100-sxm"), None, b_link).row("planner_link.alpha_s")
    assert (one_sided.a, one_sided.a_source, one_sided.b) == (None, None, 3e-6)
    assert not any(r.field.startswith("planner_link") for r in compare(builtin("h100-sxm"), builtin("h100-sxm")).rows)


def test_peer_link_kind_and_p2p():
    c = compare(builtin("rtx4090"), builtin("h100-sxm"))
    assert (c.row("peer_link.kind").a, c.row("peer_link.kind").b) == ("none", "nvlink")
    p2p = c.row("peer_link.p2p_supported")
    assert (p2p.a, p2p.b, p2p.ratio, p2p.unit) == (False, True, None, None)


def test_json_field_names_carry_units_and_the_dict_is_json():
    c = compare(profile.load(FIXTURE), builtin("rtx4090"))
    data = json.loads(json.dumps(c.to_dict(), allow_nan=False))
    assert set(data) == {"a", "b", "rows", "notes"}
    assert data["a"] == {"name": "sample-rtx4090x2", "origin": str(FIXTURE), "source": "simulated",
                         "device": "NVIDIA GeForce RTX 4090"}
    for row in data["rows"]:
        assert set(row) == {"field", "a", "b", "ratio", "a_source", "b_source", "a_reason", "b_reason", "unit"}
    fields = [row["field"] for row in data["rows"]]
    assert len(fields) == len(set(fields))
    for field in ("memory_bytes", "memory_bandwidth_Bps", "gemv_Bps.fp16", "theoretical_memory_bandwidth_Bps",
                  "dense_flops.fp16_fp32acc", "host_link.h2d.alpha_s", "host_link.d2h.beta_Bps",
                  "host_link.pcie_generation", "peer_link.kind", "peer_link.p2p_supported", "device_count"):
        assert field in fields, field


def test_only_profiles_compare():
    link = profile.load_builtin("link", "pcie4-x16")
    with pytest.raises(ValueError, match="link document, not a profile"):
        compare(builtin("rtx4090"), link)


def test_a_profile_of_different_devices_says_which_one_the_rows_compare():
    data = json.loads(FIXTURE.read_text())
    data["devices"][1]["name"] = "NVIDIA GeForce RTX 3090"
    mixed = profile.validate(data, "mixed.json")
    c = compare(builtin("rtx4090"), mixed)
    assert c.b.device == "NVIDIA GeForce RTX 4090"
    assert any(note.startswith("B (sample-rtx4090x2) holds different devices") and "devices[0]" in note
               for note in c.notes)

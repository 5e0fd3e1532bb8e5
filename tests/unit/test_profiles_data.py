"""The shipped documents: they validate, their names are what users type, their figures are pinned.

Datasheet figures are pinned here from the makers' documents each profile cites (relative 1e-9:
they are transcriptions, not computations), so that an edit to a profile is an edit to a test.
"""

import pytest

from gpucal import profiles as profile
from gpucal.profiles.queries import DEFAULT_FLOPS_MODE, resolve_gpu

GiB = 2**30
DATASHEET = ["rtx3090", "rtx4090", "rtx5090", "l40s", "a100-sxm-80gb", "a100-pcie-80gb", "h100-sxm", "h100-pcie",
             "h200-sxm"]
EXACT = dict(rel=1e-9)


def device(name):
    return profile.load_builtin("profile", name).data["devices"][0]


def test_the_names_users_type_are_all_there():
    names = profile.builtin_names("profile")
    assert set(DATASHEET) | {"seed-rtx4090", "seed-h100"} <= set(names)
    assert {"pcie3-x16", "pcie4-x16", "pcie5-x16", "nvlink3", "nvlink4", "seed-pcie4", "eth1g", "eth10g", "eth25g",
            "eth100g", "ib200g", "ib400g"} <= set(profile.builtin_names("link"))


@pytest.mark.parametrize("kind", ["profile", "link"])
def test_every_shipped_document_validates_and_is_named_after_its_file(kind):
    for name in profile.builtin_names(kind):
        doc = profile.load_builtin(kind, name)
        assert doc.name == name and doc.kind == kind


@pytest.mark.parametrize("name", DATASHEET)
def test_datasheet_profiles_cite_a_maker_document_and_default_to_a_dense_rate(name):
    doc = profile.load_builtin("profile", name).data
    assert doc["source"] == "datasheet" and doc["documents"]
    assert doc["plan_defaults"]["link"] in profile.builtin_names("link")
    d = doc["devices"][0]
    assert d["memory_bandwidth_Bps"]["source"] == "datasheet"
    for dtype in ("fp16", "bf16"):
        assert not d.get("plan_flops_mode", {}).get(dtype, DEFAULT_FLOPS_MODE[dtype]).startswith("sparse:")
        assert resolve_gpu(name, dtype=dtype).spec.flops == d["dense_flops"][DEFAULT_FLOPS_MODE[dtype]]["value"]
    # A sparse rate is twice the dense one (to the datasheets' rounding) and never stands in for it;
    # the L40S datasheet itself prints 362.05 dense and 733 sparse for fp16/bf16 (the profile notes it).
    for mode, sparse in d.get("sparse_flops", {}).items():
        rel = 1.5e-2 if (name, mode) in {("l40s", "fp16_fp32acc"), ("l40s", "bf16_fp32acc")} else 5e-3
        assert sparse["value"] == pytest.approx(2 * d["dense_flops"][mode]["value"], rel=rel)


# name: memory bytes, memory bandwidth B/s, dense fp16 FLOP/s with fp32 accumulate, PCIe gen, peer B/s per direction
PINNED = {
    "rtx3090": (24 * GiB, 936e9, 71e12, 4, None),          # GA102 whitepaper: 19.5 Gbit/s x 384 bit
    "rtx4090": (24 * GiB, 1.008e12, 165.2e12, 4, None),    # Ada whitepaper: 21 Gbit/s x 384 bit
    "rtx5090": (32 * GiB, 1.792e12, 209.5e12, 5, None),    # RTX Blackwell whitepaper: 28 Gbit/s x 512 bit
    "l40s": (48 * GiB, 864e9, 362.05e12, 4, None),         # L40S datasheet
    "a100-sxm-80gb": (80 * GiB, 2.039e12, 312e12, 4, 300e9),   # A100 datasheet; NVLink 600 GB/s total
    "a100-pcie-80gb": (80 * GiB, 1.935e12, 312e12, 4, None),   # A100 datasheet
    "h100-sxm": (80 * GiB, 3.35e12, 989.4e12, 5, 450e9),   # H100 datasheet / Hopper whitepaper; NVLink 900 GB/s total
    "h100-pcie": (80 * GiB, 2.0e12, 756.5e12, 5, None),    # H100 datasheet (1513 sparse)
    "h200-sxm": (141 * GiB, 4.8e12, 989.4e12, 5, 450e9),   # H200 datasheet
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_datasheet_figures(name):
    mem, bw, fp16, gen, peer = PINNED[name]
    d = device(name)
    assert d["memory_bytes"]["value"] == mem
    assert d["memory_bandwidth_Bps"]["value"] == pytest.approx(bw, **EXACT)
    assert d["dense_flops"]["fp16_fp32acc"]["value"] == pytest.approx(fp16, **EXACT)
    assert d["host_link"]["pcie_generation"]["value"] == gen
    if peer is None:
        assert d["peer_link"]["kind"] != "nvlink"
    else:
        assert d["peer_link"]["kind"] == "nvlink" and d["peer_link"]["bandwidth_Bps"]["value"] == peer


def test_geforce_cards_have_no_p2p_and_run_fp32_accumulate_at_half_rate():
    for name in ("rtx3090", "rtx4090", "rtx5090"):
        d = device(name)
        assert d["peer_link"]["p2p_supported"]["value"] is False
        flops = d["dense_flops"]
        assert flops["fp16_fp16acc"]["value"] == pytest.approx(2 * flops["fp16_fp32acc"]["value"], rel=2e-3)


def test_rtx4090_physical_inputs_of_the_article_table():
    d = device("rtx4090")
    assert d["memory_bytes"]["value"] == 25_769_803_776
    assert d["dense_flops"]["fp16_fp16acc"]["value"] == pytest.approx(330.3e12, **EXACT)


def test_missing_rates_are_null_with_a_reason():
    assert device("a100-sxm-80gb")["dense_flops"]["fp8_fp32acc"] == {
        "value": None, "source": "datasheet", "ref": "a100-datasheet", "reason": "no FP8 tensor cores on Ampere"}
    assert device("l40s")["peer_link"]["p2p_supported"]["value"] is None


def test_the_articles_profiles_are_labelled_and_plan_with_its_numbers():
    rtx = resolve_gpu("seed-rtx4090")
    assert rtx.document.data["source"] == "article"
    assert (rtx.spec.memory_bandwidth_Bps, rtx.spec.flops, rtx.spec.memory_bytes) == (1e12, 330e12, 24e9)
    assert rtx.spec.flops_mode == "fp16_fp16acc"
    note = rtx.document.data["devices"][0]["dense_flops"]["fp16_fp16acc"]["note"]
    assert "fp16 accumulate" in note and "165.2e12" in note
    h100 = resolve_gpu("seed-h100")
    assert (h100.spec.memory_bandwidth_Bps, h100.spec.flops, h100.spec.memory_bytes) == (3.35e12, 1979e12, 80e9)
    assert h100.spec.flops_mode == "sparse:fp16_fp32acc"
    assert "sparse" in h100.document.data["devices"][0]["sparse_flops"]["fp16_fp32acc"]["note"]
    assert rtx.default_link == "seed-pcie4" and h100.default_link == "seed-nvlink4"


def link(name):
    return profile.load_builtin("link", name).data


def test_link_presets():
    seed = link("seed-pcie4")
    assert (seed["alpha_s"]["value"], seed["beta_Bps"]["value"]) == (30e-6, 32e9)
    assert seed["alpha_s"]["source"] == "article"
    for gen, rate in ((3, 8), (4, 16), (5, 32)):  # GT/s per lane, 128b/130b encoding, 16 lanes
        assert link(f"pcie{gen}-x16")["beta_Bps"]["value"] == pytest.approx(rate * 1e9 * 16 * 128 / 130 / 8, **EXACT)
    for name, gbit in (("eth1g", 1), ("eth10g", 10), ("eth25g", 25), ("eth100g", 100), ("ib200g", 200),
                       ("ib400g", 400)):
        assert link(name)["beta_Bps"]["value"] == gbit * 125e6  # 1 Gbit/s = 125e6 B/s
    assert link("nvlink4")["beta_Bps"]["value"] == 450e9 and link("nvlink3")["beta_Bps"]["value"] == 300e9
    for name in profile.builtin_names("link"):
        alpha = link(name)["alpha_s"]
        assert alpha["source"] in ("article", "estimate") and alpha.get("note")

"""aiconfigurator's performance tables from a calibrated profile (``gpucal.profiles.aic_tables``): each row is the
profile's own figure in aiconfigurator's units (milliseconds, elements), in the types its loader requires, and the
files are written all at once under the export's data_dir, never over a file without --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_gpucal

from gpucal import profiles
from gpucal.errors import InputError, ProfileExistsError
from gpucal.profiles import aic_tables
from gpucal.profiles import export as ex
from gpucal.profiles.decode_queries import decode_terms

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def doc(tmp_path_factory) -> profiles.Document:
    path = tmp_path_factory.mktemp("cal") / "h200x2.json"
    done = run_gpucal("calibrate", "--simulate", "h200-sxm:2", "--quick", "-o", str(path))
    assert done.returncode == 0, done.stderr
    return profiles.load(str(path))


def _by_name(tables):
    return {t.stem: t for t in tables}


def _rows(table):
    cols = table.columns
    return [dict(zip(cols, values)) for values in zip(*cols.values())]


def test_the_gemm_table_holds_every_measured_point_and_the_curve_elsewhere(doc):
    tables, missing = aic_tables.tables(doc)
    gemm = _by_name(tables)["gemm_perf"]
    rows = {(r["gemm_dtype"], r["m"], r["n"], r["k"]): r["latency"] for r in _rows(gemm)}
    device = doc.profile.devices[0]
    curve = device.decode.gemm["bf16"]
    assert {r["gemm_dtype"] for r in _rows(gemm)} == {"bfloat16"}  # bf16 measured: fp16 is not written twice
    for row in curve.rows:
        for weight_bytes, seconds in row.points:
            (n, k), = [s for s in curve.shapes if s[0] * s[1] * 2 == weight_bytes]
            assert rows[("bfloat16", row.m, n, k)] == pytest.approx(seconds * 1e3, rel=1e-12)
    priced = decode_terms(device).gemm["bf16"]
    m = curve.rows[-1].m
    assert rows[("bfloat16", m, 65536, 4096)] == pytest.approx(priced.time_s(m, 65536 * 4096 * 2) * 1e3, rel=1e-12)
    assert len(rows) == len(curve.rows) * len(aic_tables.GEMM_SITES) ** 2
    assert any("context_attention_perf" in m for m in missing)


def test_the_attention_table_is_the_fit_over_its_grid(doc):
    att = _by_name(aic_tables.tables(doc)[0])["generation_attention_perf"]
    fit = doc.profile.devices[0].decode.attention["bf16"]
    rows = _rows(att)
    gqa = next(r for r in rows if (r["num_heads"], r["num_key_value_heads"], r["head_dim"], r["batch_size"],
                                   r["step"]) == (32, 8, 128, 8, 1023))
    kv_bytes = 2 * 8 * 1024 * 8 * 128 * 2
    assert gqa["isl"] == 1 and gqa["kv_cache_dtype"] == "bfloat16"
    assert gqa["latency"] == pytest.approx((fit.alpha_s.value + kv_bytes / fit.beta_Bps.value) * 1e3, rel=1e-12)
    mha = next(r for r in rows if (r["num_heads"], r["num_key_value_heads"], r["head_dim"], r["batch_size"],
                                   r["step"]) == (16, 0, 64, 1, 15))  # plain multi-head: keyed as 0 KV heads
    assert mha["latency"] == pytest.approx((fit.alpha_s.value + 2 * 16 * 16 * 64 * 2 / fit.beta_Bps.value) * 1e3,
                                           rel=1e-12)
    assert {r["head_dim"] for r in rows} == {64, 128} | {fit.head_dim}


def test_the_allreduce_table_is_the_graph_fit_per_regime_in_elements(doc):
    ar = _by_name(aic_tables.tables(doc)[0])["custom_allreduce_perf"]
    entry = next(e for e in doc.profile.collectives if e.graphs and e.nranks == 2)
    for r in _rows(ar):
        size = r["message_size"] * 2
        piece = entry.piece_for(size)
        assert r["num_gpus"] == 2 and r["implementation"] == "gpucal-nccl-graph"
        assert r["latency"] == pytest.approx((max(0.0, piece.alpha_s) + size / piece.beta_Bps) * 1e3, rel=1e-12)


def test_the_files_are_parquet_of_the_loaders_types_under_data_dir(doc, tmp_path):
    result = ex.export(doc, "aiconfigurator")
    written = ex.write(result, tmp_path)
    assert written[0] == tmp_path / "h200x2.yaml"
    gemm = pq.read_table(tmp_path / "data/h200x2/gemm/trtllm" / aic_tables.AIC_VERSION / "gemm_perf.parquet")
    types = {f.name: str(f.type) for f in gemm.schema}
    assert types == {"gemm_dtype": "string", "m": "int64", "n": "int64", "k": "int64", "latency": "double"}
    meta = (tmp_path / "data/h200x2/gemm/trtllm" / aic_tables.AIC_VERSION / "collection_meta.yaml").read_text()
    assert "schema_version: 1" in meta and "gemm_perf:" in meta and "not by aiconfigurator's collector" in meta
    assert set(result.data["gpucal"]["tables"]) == {f"{t.folder}/{t.stem}.parquet" for t in result.tables}
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / "h200x2.yaml").unlink()  # one file gone, the tables still there: nothing is written without --force
    with pytest.raises(ProfileExistsError):
        ex.write(result, tmp_path)
    assert not (tmp_path / "h200x2.yaml").exists()
    ex.write(result, tmp_path, force=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_datasheet_profile_has_no_tables_and_says_so():
    result = ex.export(profiles.load_builtin("profile", "h200-sxm"), "aiconfigurator")
    assert result.tables == () and "SOL mode only" in result.data["gpucal"]["not_measured"]
    assert "tables" not in result.data["gpucal"]


def test_the_cli_says_what_it_wrote(doc, tmp_path):
    done = run_gpucal("profiles", "export", str(doc.origin), "--format", "aiconfigurator", "-o", str(tmp_path),
                      "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert len(out["tables"]) == 6 and all(Path(p).is_file() for p in out["tables"])  # 3 tables + 3 meta files


def test_a_table_left_by_an_earlier_export_is_refused_and_a_refusal_makes_no_folder(doc, tmp_path):
    ex.write(ex.export(doc, "aiconfigurator"), tmp_path)
    data = json.loads(Path(doc.origin).read_text())
    data["collectives"] = []  # the same profile without its all-reduce: no all-reduce table
    fewer = tmp_path / "h200x2.json"
    fewer.write_text(json.dumps(data))
    result = ex.export(profiles.load(str(fewer)), "aiconfigurator")
    assert {t.stem for t in result.tables} == {"gemm_perf", "generation_attention_perf"}
    with pytest.raises(InputError, match="custom_allreduce_perf.parquet is left from an earlier export"):
        ex.write(result, tmp_path, force=True)
    assert (tmp_path / "data/h200x2/comm").is_dir()  # kept, not removed
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "h200x2.yaml").write_text("the user's file\n")
    with pytest.raises(ProfileExistsError):
        ex.write(result, elsewhere)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["h200x2.yaml"]  # no data/ folder made

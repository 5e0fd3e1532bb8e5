"""What one decode step pays on a device, as measured: the decode-GEMM curve per dtype, decode attention per
dtype and the host's fixed costs per kernel and per step (``devices[].decode``). ``gpucal.plan.decode``
prices a step from them; ``gpucal.profiles.decode_queries.decode_terms`` reads them into its types.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from gpucal import limits
from gpucal.profiles.model.base import Omittable, Point, Strict, Text, integer, number
from gpucal.profiles.model.fit import R2, RESIDUAL_MAX, Intercept
from gpucal.profiles.model.quantity import SAMPLES_MAX, RateQuantity, TimeQuantity

__all__ = ["DecodeGemmRow", "DecodeGemmCurve", "DecodeAttention", "LaunchCosts", "DecodeTerms", "DecodeDtype",
           "PublishedAllReduce", "PublishedTerms"]

_RATE = limits.RANGES["rate"]
DecodeDtype = Literal["fp16", "bf16", "fp8", "fp32"]
Measured = Literal["measured", "simulated"]


class DecodeGemmRow(Strict):
    """The decode GEMM at one m (the batch): t = alpha + W/beta over the weight bytes W of the shapes measured."""

    m: integer(1, limits.MODEL_MAXIMA["hidden"])
    alpha_s: Intercept
    beta_Bps: number(*_RATE, description="weight bytes per second of the fit's slope (W/t at large W)")
    r2: Optional[R2] = None
    n: Omittable[integer(1, SAMPLES_MAX)] = None
    points: list[Point] = Field(description="[weight bytes, median seconds] of each shape measured at this m")


class DecodeGemmCurve(Strict):
    """The decode-GEMM curve of one dtype (``gpucal.plan.decode.GemmCurve`` prices any (m, n, k) from it)."""

    source: Measured
    method: Text
    statistic: Literal["median"] = "median"
    byte_convention: Text
    shapes: Annotated[list[Annotated[list[integer(1, limits.MODEL_MAXIMA["hidden"])], Field(min_length=2, max_length=2)]], Field(
        min_length=1, description="the [n, k] weight shapes measured")]
    rows: Annotated[list[DecodeGemmRow], Field(min_length=1)]
    holdout_max_error_frac: Optional[number(0, RESIDUAL_MAX)] = Field(None, description=(
        "the largest |predicted/measured - 1| over the points, each predicted by the curve fitted without it"))
    holdout: Omittable[Text] = None
    dropped: Omittable[list[Text]] = Field(None, description="the m measured but left out of the curve, and why")
    timed_as: Omittable[Literal["graph", "eager", "mixed"]] = Field(None, description=(
        "each GEMM timed as a node of a replayed CUDA graph, or launched back to back"))

    @model_validator(mode="after")
    def _increasing(self) -> DecodeGemmCurve:
        ms = [r.m for r in self.rows]
        if ms != sorted(set(ms)):
            raise PydanticCustomError("increasing", "the rows' m must be distinct and increasing, got {ms}",
                                      {"ms": str(ms)})
        return self


class DecodeAttention(Strict):
    """Decode attention of one dtype: t = alpha + KV/beta over the KV bytes a call reads (2·B·T·H_kv·D·itemsize),
    fitted over batch × context × heads per card."""

    alpha_s: TimeQuantity
    beta_Bps: RateQuantity
    head_dim: integer(1, limits.MODEL_MAXIMA["head_dim"])
    r2: Optional[R2] = None
    points: list[Point] = Field(description="[KV bytes, median seconds] of each case")
    cases: Omittable[list[Text]] = None
    max_abs_residual_frac: Optional[number(0, RESIDUAL_MAX)] = None
    timed_as: Omittable[Literal["graph", "eager", "mixed"]] = Field(None, description=(
        "each call timed as a node of a replayed CUDA graph, or launched back to back"))


class LaunchCosts(Strict):
    """The host's fixed costs: a small kernel launched back to back (eager), a node of a replayed CUDA graph, and
    a small kernel launched and waited for (the per-step synchronize)."""

    eager_s: TimeQuantity
    graph_node_s: TimeQuantity
    sync_s: TimeQuantity


class DecodeTerms(Strict):
    """What a decode step pays on this device, as measured (``gpucal calibrate``)."""

    gemm: Omittable[dict[DecodeDtype, DecodeGemmCurve]] = None
    attention: Omittable[dict[DecodeDtype, DecodeAttention]] = None
    launch: Omittable[LaunchCosts] = None


class PublishedAllReduce(Strict):
    """NCCL's all-reduce as nccl-tests' ``all_reduce_perf`` printed it on a box of this card model: the time at
    the smallest sizes (``alpha_s``) and the bus bandwidth at the largest (``busbw_Bps``; the planner's beta over
    the buffer size is busbw·n/(2(n−1)))."""

    nranks: integer(2, limits.MAX_DEVICES)
    system: Text = Field(description="the box it ran on: cards, how they are joined")
    alpha_s: TimeQuantity
    busbw_Bps: RateQuantity
    graphs: bool = Field(False, description="timed in CUDA graphs (nccl-tests -G)")


class PublishedTerms(Strict):
    """The decode step's terms as others measured them on this card model (source ``published``, each citing its
    document), for planning before the card is at hand; a value no one published is null with the reason."""

    stream_Bps: RateQuantity = Field(description="device-memory stream bandwidth (BabelStream, nvbandwidth)")
    decode_gemm_weight_Bps: RateQuantity = Field(description=(
        "weight bytes per second a decode-shape GEMM (m = 1 … 16, shard weights of tens of MB and more) reaches"))
    launch: LaunchCosts
    allreduce: list[PublishedAllReduce] = Field(default_factory=list)

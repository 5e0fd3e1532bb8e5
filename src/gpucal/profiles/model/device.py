"""A device of a hardware profile: its memory, bandwidth, FLOP/s per mode, host and peer links."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from gpucal import limits
from gpucal.profiles.model.base import Omittable, Printable, Strict, Text, integer
from gpucal.profiles.model.decode import DecodeTerms, PublishedTerms
from gpucal.profiles.model.fit import AlphaBeta
from gpucal.profiles.model.quantity import (BytesQuantity, FlagQuantity, FlopsQuantity, IntegerQuantity,
                                            RateQuantity)

__all__ = ["FLOPS_MODES", "FlopsMode", "WeightDtype", "HostLink", "PeerLink", "Device", "DeviceIndex"]

FLOPS_MODES = ("fp64", "fp64_tensor", "fp32", "tf32", "fp16_fp32acc", "bf16_fp32acc", "fp16_fp16acc", "fp8_fp32acc",
               "fp8_fp16acc")
FlopsMode = Literal["fp64", "fp64_tensor", "fp32", "tf32", "fp16_fp32acc", "bf16_fp32acc", "fp16_fp16acc",
                    "fp8_fp32acc", "fp8_fp16acc"]
WeightDtype = Literal["fp16", "bf16", "fp8", "fp32"]
DeviceIndex = integer(0, limits.MAX_DEVICES - 1)
FlopsTable = Annotated[dict[FlopsMode, FlopsQuantity], Field(description=(
    "FLOP/s per mode: the data type of the operands, and of the accumulator where it matters for the rate. "
    "fp64 is the non-tensor rate, fp64_tensor the tensor-core (DMMA) rate."))]
_PLAN_MODE = "^(sparse:)?(" + "|".join(FLOPS_MODES) + ")$"


class HostLink(Strict):
    """The device's link to the host: PCIe generation and width (now and at most), and the measured copies."""

    pcie_generation: IntegerQuantity
    pcie_width: IntegerQuantity
    pcie_generation_max: Omittable[IntegerQuantity] = None
    pcie_width_max: Omittable[IntegerQuantity] = None
    h2d: Omittable[AlphaBeta] = None
    d2h: Omittable[AlphaBeta] = None


class PeerLink(Strict):
    """The device's link to its peers: its kind, whether P2P is supported, NVLink's generation and rates."""

    model_config = ConfigDict(json_schema_extra={"allOf": [
        {"if": {"properties": {"kind": {"const": "nvlink"}}}, "then": {"required": ["bandwidth_Bps"]}}]})

    kind: Literal["nvlink", "pcie", "none"]
    p2p_supported: FlagQuantity
    nvlink_generation: Omittable[integer(1, 16)] = None
    bandwidth_Bps: Omittable[RateQuantity] = None
    nvlink_bridge_Bps: Omittable[RateQuantity] = None

    @model_validator(mode="after")
    def _nvlink_rate(self) -> PeerLink:
        if self.kind == "nvlink" and self.bandwidth_Bps is None:
            raise PydanticCustomError("required", "'{name}' is a required property", {"name": "bandwidth_Bps"})
        return self


class Device(Strict):
    """A device (or ``count`` identical ones): what the planner and the exports read of a card."""

    name: Text
    uuid: Optional[Printable] = None
    count: Omittable[integer(1, limits.MAX_DEVICES, description="identical devices this entry stands for")] = None
    architecture: Omittable[Text] = None
    compute_capability: Omittable[Annotated[str, Field(pattern="^[0-9]+\\.[0-9]+$")]] = None
    memory_bytes: BytesQuantity
    memory_bandwidth_Bps: RateQuantity
    dense_flops: FlopsTable
    sparse_flops: Omittable[FlopsTable] = Field(None, description=(
        "2:4 structured-sparsity rates; never used unless a plan_flops_mode entry or the user names one"))
    plan_flops_mode: Omittable[dict[WeightDtype, Annotated[str, Field(pattern=_PLAN_MODE)]]] = Field(None, description=(
        "Which FLOP/s entry the planner uses for weights of each dtype; 'sparse:MODE' names a sparse_flops entry. "
        "Without an entry the planner uses fp16_fp32acc for fp16, bf16_fp32acc for bf16, fp8_fp32acc for fp8 and "
        "fp32 for fp32."))
    host_link: Omittable[HostLink] = None
    peer_link: Omittable[PeerLink] = None
    numa_node: Optional[integer(-1, 1023, description=(
        "the NUMA node nearest the device; -1 where the OS knows none"))] = None
    index: Omittable[integer(0, limits.MAX_DEVICES - 1, description=(
        "the device's index in the runtime's order, where the profile lists devices one by one"))] = None
    gemv_Bps: Omittable[dict[Literal["fp16", "bf16", "fp32", "fp8"], RateQuantity]] = Field(None, description=(
        "decode-step GEMV (y = W x, batch 1) effective bandwidth per weight dtype: (bytes of W + x + y)/t"))
    theoretical_memory_bandwidth_Bps: Omittable[RateQuantity] = None
    decode: Omittable[DecodeTerms] = Field(None, description=(
        "what a decode step pays on this device, as measured: the decode-GEMM curve, attention, launch costs"))
    published: Omittable[PublishedTerms] = Field(None, description=(
        "the decode step's terms as others measured them on this card model (datasheet profiles)"))
    host: Omittable[integer(0, limits.MAX_DEVICES - 1, description=(
        "a cluster profile: the index of the device's host in cluster.hosts"))] = None
    local_index: Omittable[integer(0, limits.MAX_DEVICES - 1, description=(
        "a cluster profile: the device's index on its host"))] = None

    @property
    def units(self) -> int:
        """The devices this entry stands for (``count``, 1 when absent)."""
        return 1 if self.count is None else self.count

    def flops(self, mode: str) -> FlopsQuantity | None:
        """The FLOP/s entry of ``mode`` (``sparse:MODE`` names a ``sparse_flops`` entry), ``None`` if absent."""
        table = self.sparse_flops if mode.startswith("sparse:") else self.dense_flops
        return (table or {}).get(mode.removeprefix("sparse:"))

    @property
    def cc(self) -> tuple[int, int] | None:
        """The compute capability as (major, minor), ``None`` when the profile does not say."""
        if self.compute_capability is None:
            return None
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

"""The planner: the seed article's pipeline- and tensor-parallel equations, pure.

SI in and SI out, one function per equation with a docstring naming its source (``equations``),
composed into one decode step over a layout of cards (``step``), swept over many configurations at
once (``sweep``), and inverted by the solvers (``solvers``). No I/O and no GPU: the caller builds
``ModelSpec``, ``GpuSpec`` and ``LinkSpec`` from profiles and flags.
"""

from gpucal.plan.models import PRESETS, ModelSpec, model_from_hf_config, model_spec, params_from_architecture
from gpucal.plan.solvers import max_batch_for_target, nics_needed, required_beta_for_target
from gpucal.plan.spec import COMM_MODELS, STRATEGIES, GpuSpec, Layout, LinkSpec
from gpucal.plan.step import Step, evaluate
from gpucal.plan.sweep import Sweep, sweep, valid_tp

__all__ = [
    "PRESETS", "ModelSpec", "model_from_hf_config", "model_spec", "params_from_architecture",
    "max_batch_for_target", "nics_needed", "required_beta_for_target",
    "COMM_MODELS", "STRATEGIES", "GpuSpec", "Layout", "LinkSpec",
    "Step", "evaluate", "Sweep", "sweep", "valid_tp",
]

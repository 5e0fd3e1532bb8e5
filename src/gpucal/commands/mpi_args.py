"""What the commands that run over MPI share: the world (with a clear refusal outside mpiexec) and the
``--simulate-net LINK[+OPTION...]`` flag."""

from __future__ import annotations

from gpucal.commands.args import whole
from gpucal.errors import InputError
from gpucal.units import parse_quantity

__all__ = ["simulated_net", "mpi_world"]


def simulated_net(text: str | None, flag: str = "--simulate-net"):
    """``LINK[+noise=F][+seed=N][+per-host=N]`` as a ``SimulatedNet`` (LINK: a link preset, a file, or
    alpha=..,beta=..; per-host: ranks per simulated host, default 1); None for None."""
    if text is None:
        return None
    from gpucal.profiles.queries import resolve_link
    from gpucal.kernels.comm import SimulatedNet

    link, *options = text.split("+")
    if not link:
        raise InputError(f"{flag}: expected LINK[+noise=F][+seed=N][+per-host=N], such as eth1g or "
                         "eth1g+noise=0.02")
    choice = resolve_link(link, flag)
    values = {"noise": 0.0, "seed": 0, "per-host": 1}
    for option in options:
        key, sep, value = option.partition("=")
        if key not in values or not sep:
            raise InputError(f"{flag}: unknown option {option!r} (options: +noise=F, +seed=N, +per-host=N)")
        try:  # ASCII digits only: float() and int() also take '٠.٥', '١' and '1_0'
            values[key] = parse_quantity(value, "number") if key == "noise" else whole(value)
        except ValueError:
            raise InputError(f"{flag}: {key}: expected a number, got {value[:40]!r}") from None
        if key == "seed" and values[key] < 0:
            raise InputError(f"{flag}: seed: expected a whole number of at least 0, got {value!r}")
        if key == "noise" and not 0 <= values[key] < 1:
            raise InputError(f"{flag}: noise: expected a fraction in [0, 1), got {value!r}")
        if key == "per-host" and values[key] < 1:
            raise InputError(f"{flag}: per-host: expected at least 1 rank per simulated host, got {value!r}")
    return SimulatedNet(choice.spec.name, choice.spec.alpha_s, choice.spec.beta_Bps, values["noise"], values["seed"],
                        values["per-host"])


def mpi_world(what: str, simulate_hosts: bool = False, minimum: int = 2, ranks_per_host: int = 1):
    """The MPI world; refuses (exit 2) fewer than ``minimum`` ranks, naming how to launch ``what``."""
    from gpucal.kernels.comm import world

    w = world(simulate_hosts=simulate_hosts, ranks_per_host=ranks_per_host)
    if w.size < minimum:
        raise InputError(f"{what}: runs over MPI with at least {minimum} ranks; launch it with "
                         f"mpiexec -n N gpucal {what} (or srun -n N under Slurm); this is 1 rank")
    return w


def mark_rank() -> None:
    """Learn this process's rank, where MPI is there, so that an error every rank raises alike (a bad flag)
    is printed by rank 0 alone."""
    from gpucal.kernels.comm import MpiUnavailable, world

    try:
        world()
    except MpiUnavailable:
        pass


def checked(parse, args):
    """``parse(args)`` (a command's flag checks, the same on every rank), with a refusal printed by rank 0 only."""
    try:
        return parse(args)
    except InputError:
        mark_rank()
        raise

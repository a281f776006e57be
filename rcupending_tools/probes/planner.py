"""Resolve the probe table against the running kernel and attach for real.

`check` and the collector share this path: a probe is `attached` only when its real program
loaded and attached; the status is never inferred from the kernel config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

from ..kernel import KernelInfo
from . import bpfload
from .table import PROBES, AttachKind, Candidate, Probe


class Status(StrEnum):
    ATTACHED = "attached"
    STAND_IN = "stand-in"
    BLOCKED = "blocked"
    ABSENT = "absent"


@dataclass
class ProbeStatus:
    name: str
    function: str
    status: Status
    symbol: str | None = None
    module: str | None = None
    params: list[str] | None = None
    mechanism: str | None = None  # "fentry", "kprobe", "tracepoint:kmem:mm_page_alloc"
    counted_at: str | None = None  # where calls are counted: symbol(s), or the stand-in
    detail: str = ""
    tried: list[str] = field(default_factory=list)  # "kind: reason" per failed attempt
    unavailable: dict[str, str] = field(default_factory=dict)  # metric -> why, once attached
    facts: dict[str, str] = field(default_factory=dict)  # layout findings, e.g. kvfree backend

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = str(self.status)
        return d


@dataclass
class Binding:
    """A probe bound to one symbol of this kernel."""

    probe: Probe
    candidate: Candidate
    symbol: str  # kallsyms name (may be a .isra clone)
    module: str | None
    params: list[str] | None  # from BTF, None without BTF


def _version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def bind(probe: Probe, kernel: KernelInfo) -> Binding | ProbeStatus:
    """Pick the candidate symbol present in this kernel, or say why it is absent."""
    version = kernel.version
    in_range = probe.candidates_for(version)
    ordered = in_range + [c for c in probe.candidates if c not in in_range]
    for cand in ordered:
        sym_name = kernel.clone_name(cand.symbol)
        if sym_name is None:
            continue
        ksym = kernel.kallsyms[sym_name][0]
        if cand.module and ksym.module not in (None, cand.module):
            continue
        params = kernel.func_params(cand.symbol, ksym.module) if kernel.has_btf else None
        # BTF decides the signature; a candidate whose names disagree yields to one that agrees.
        if params is not None and cand.params and tuple(params) != cand.params:
            match = next(
                (c for c in ordered if c.symbol == cand.symbol and c.params == tuple(params)), None
            )
            cand = match or cand
        return Binding(probe, cand, sym_name, ksym.module, params)
    version_text = f"this kernel is {_version_text(version)}"
    module = next((c.module for c in in_range if c.module), None)
    if module and kernel.module_available(module) and not kernel.module_loaded(module):
        reason = f"{probe.function}: module {module} is not loaded (modprobe {module})"
    else:
        reason = f"{probe.function} not in kallsyms: {probe.absent_reason}; {version_text}"
    return ProbeStatus(probe.name, probe.function, Status.ABSENT, detail=reason)


Attempt = tuple[AttachKind, dict, list, dict[str, str], dict[str, str]]


def attempts(binding: Binding, kernel: KernelInfo) -> list[Attempt]:
    """(kind, -D defines, kprobe attach list, unavailable metrics, layout facts) per attach
    kind, in preference order."""
    probe, sym = binding.probe, binding.symbol
    base: dict[str, str | None] = {f"{probe.prefix}_SYM": sym}
    if binding.params and binding.params[0].startswith("gfp"):  # (gfp_flags, nid, order)
        base[f"{probe.prefix}_GFP_ARG"] = None
    out: list[Attempt] = []
    for kind in probe.kinds:
        defines = dict(base)
        extra: list[tuple[str, str, str]] = []
        fentry_extra: list[tuple[str, str, str]] = []
        unavailable: dict[str, str] = {}
        facts: dict[str, str] = {}
        if probe.layout:
            lay = probe.layout(kernel, binding.params, str(kind))
            defines.update(lay.defines)
            extra, fentry_extra, unavailable = lay.kprobes, lay.fentry_kprobes, lay.unavailable
            facts = lay.facts
        if kind is AttachKind.FENTRY:
            defines[f"{probe.prefix}_FENTRY"] = None
            out.append((kind, defines, list(fentry_extra), unavailable, facts))
        elif kind is AttachKind.KPROBE:
            defines[f"{probe.prefix}_KPROBE"] = None
            mech = "kretprobe" if probe.needs_return else "kprobe"
            attach_list = [(mech, sym, probe.kprobe_fn), *extra]
            out.append((kind, defines, attach_list, unavailable, facts))
    return out


def _fentry_precheck(binding: Binding, kernel: KernelInfo) -> str | None:
    """Reasons fentry cannot work here that bcc would report badly."""
    if not kernel.has_btf:
        return "no kernel BTF (/sys/kernel/btf/vmlinux)"
    if "." in binding.symbol:
        return f"compiler clone {binding.symbol} has no BTF function"
    if binding.module:
        return f"function is in module {binding.module}: this bcc attaches fentry to vmlinux only"
    if binding.params is None:
        return f"{binding.symbol} not in BTF (inlined or notrace)"
    return None


def attach(probe: Probe, kernel: KernelInfo) -> tuple[ProbeStatus, bpfload.Loaded | None]:
    """Attach `probe` with the best kind that works; the caller owns (and closes) the result."""
    bound = bind(probe, kernel)
    if isinstance(bound, ProbeStatus):
        return bound, None
    status = ProbeStatus(
        probe.name, probe.function, Status.BLOCKED, bound.symbol, bound.module, bound.params
    )
    for kind, defines, attach_list, unavailable, facts in attempts(bound, kernel):
        if kind is AttachKind.FENTRY and (why := _fentry_precheck(bound, kernel)):
            status.tried.append(f"fentry: {why}")
            continue
        try:
            loaded = bpfload.load(probe.bpf_file, defines, str(kind), attach_list)
        except bpfload.LoadError as e:
            status.tried.append(f"{kind}: {e.reason}")
            continue
        status.status = Status.ATTACHED
        status.unavailable = dict(unavailable)
        status.facts = dict(facts)
        status.mechanism = (
            ("fexit" if probe.needs_return else "fentry")
            if (kind is AttachKind.FENTRY)
            else ("kretprobe" if probe.needs_return else "kprobe")
        )
        status.counted_at = bound.symbol
        if inner := defines.get(f"{probe.prefix}_INNER_SYM"):
            status.counted_at += f" + {inner} (calls not from {bound.symbol})"
        status.detail = f"{status.mechanism} on {status.counted_at}"
        return status, loaded
    blocked = "; ".join(status.tried)
    if probe.stand_in is not None:
        loaded = _try_stand_in(probe, status, kernel)
        if loaded is not None:
            return status, loaded
    status.detail = blocked
    return status, None


def _try_stand_in(
    probe: Probe, status: ProbeStatus, kernel: KernelInfo
) -> bpfload.Loaded | None:
    stand_in = probe.stand_in
    assert stand_in is not None
    defines: dict[str, str | int | None] = {f"{probe.prefix}_TRACEPOINT": None}
    unavailable: dict[str, str] = {}
    if probe.layout:
        lay = probe.layout(kernel, None, "tracepoint")
        defines.update(lay.defines)
        unavailable = dict(lay.unavailable)
    try:
        loaded = bpfload.load(probe.bpf_file, defines, "tracepoint")
    except bpfload.LoadError as e:
        status.tried.append(f"tracepoint {stand_in.tracepoint}: {e.reason}")
        return None
    status.status = Status.STAND_IN
    status.unavailable = unavailable
    status.mechanism = f"tracepoint:{stand_in.tracepoint}"
    status.counted_at = status.mechanism
    status.detail = (
        f"function blocked ({'; '.join(status.tried)}); stand-in sees "
        f"{stand_in.sees}; misses {stand_in.misses}"
    )
    return loaded


def check_all(
    kernel: KernelInfo | None = None, probes: tuple[Probe, ...] = PROBES
) -> list[ProbeStatus]:
    """Attach and detach each probe in turn; report one status per probe."""
    kernel = kernel or KernelInfo()
    results = []
    for probe in probes:
        status, loaded = attach(probe, kernel)
        if loaded is not None:
            loaded.close()
        results.append(status)
    return results

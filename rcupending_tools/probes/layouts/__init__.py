"""Kernel layouts for the BPF side, one module per family: from the running kernel's kallsyms
and BTF (never headers), -D defines (symbol addresses, struct offsets, which paths exist to
hook) and the extra attach points; missing pieces become `unavailable` reasons, not guesses."""

from .common import Defines, Layout, bytes_defines, gp_seq_define, symbol_range, tracking_defines
from .kvfree import EXTRAS, KRC_FUNCTIONS, PENDING_KVFREE_SYMBOL, kvfree_backend, kvfree_layout
from .nolock import NOLOCK_INNER, NOLOCK_WRAPPER, inner_defines, nolock_layout, preempt_masks
from .pending import PROCESS_CALLBACKS, pending_layout

__all__ = [
    "EXTRAS", "KRC_FUNCTIONS", "NOLOCK_INNER", "NOLOCK_WRAPPER", "PENDING_KVFREE_SYMBOL",
    "PROCESS_CALLBACKS", "Defines", "Layout", "bytes_defines", "gp_seq_define", "inner_defines",
    "kvfree_backend", "kvfree_layout", "nolock_layout", "pending_layout", "preempt_masks",
    "symbol_range", "tracking_defines",
]

"""One source of truth for the BPF side's indexes: the headers in bpf/. The C compiler, not
our parser, says what each enumerator is worth; the families' names follow the headers."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rcupending_tools import config
from rcupending_tools.families import enums, kvfree, nolock, pending
from rcupending_tools.pipeline import raw

HEADERS = ("kvfree_rcu.h", "rcu_pending.h", "nolock.h", "common.bpf.h")
# What a BPF header needs from the kernel's headers, for a plain C compile.
PRELUDE = """#include <stdio.h>
#include <stdint.h>
#include <stdbool.h>
typedef uint32_t u32; typedef int32_t s32; typedef uint64_t u64; typedef int64_t s64;
#define TASK_COMM_LEN 16
#define __always_inline inline
"""


def compiled_values(name: str, header: enums.Header, tmp_path) -> dict[str, int]:
    """Every enumerator and #define value of bpf/`name` as gcc computes it."""
    src = tmp_path / "probe.c"
    body = "\n".join(f'    printf("{n} %lld\\n", (long long)({n}));' for n in header.values)
    text = config.bpf_dir().joinpath(name).read_text()
    text = text.replace("#include <uapi/linux/ptrace.h>", "").replace(
        "#include <linux/sched.h>", "")
    src.write_text(f"{PRELUDE}\n{text}\nint main(void) {{\n{body}\n    return 0;\n}}\n")
    exe = tmp_path / "probe"
    subprocess.run([shutil.which("gcc") or "cc", "-w", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (ln.split() for ln in out.splitlines())}


@pytest.mark.parametrize("name", HEADERS)
def test_parser_agrees_with_the_c_compiler(name, tmp_path):
    header = enums.header(name)
    assert header.enums, f"no enum found in {name}"
    assert compiled_values(name, header, tmp_path) == header.values


def test_families_take_their_names_from_the_headers():
    assert kvfree.PATHS == ("bulk", "list", "inline", "sheaf", "other")
    assert len(kvfree.PATHS) == kvfree.NPATH
    assert len(kvfree.EVENTS) == kvfree.NEV and len(kvfree.DURATIONS) == kvfree.NDUR
    assert kvfree.ST_MAX == kvfree.ST_REPLACED_BYTES + 1 == kvfree.ST_UNMATCHED + kvfree.NPATH + 1
    assert len(pending.STATS) == pending.PS_MAX and len(pending.FLAVORS) == pending.NFL
    assert nolock.STATS[:2] == ("attempts", "failures")
    assert nolock.CONTEXTS == ("task", "softirq", "hardirq", "nmi", "unknown")
    assert raw.LOST_REASONS[0] == "task_map_full"
    assert len(raw.LOST_REASONS) <= enums.header("common.bpf.h")["LOST_MAX"]


def test_parser_evaluates_expressions_and_refuses_gaps():
    h = enums.parse("#define W 4\nenum e { A_X = 2, A_Y = A_X + W, A_MAX };\n"
                    "enum g { G_A, G_B = 1 << 2 };")
    assert h.values == {"W": 4, "A_X": 2, "A_Y": 6, "A_MAX": 7, "G_A": 0, "G_B": 4}
    with pytest.raises(enums.EnumError):
        h.enum("g").names("G_")  # 0, 4: not an index range
    with pytest.raises(enums.EnumError):
        enums.parse("enum e { A = sizeof(int) };")

"""Unit tests of lab kernel recipes: parsing, source choice, hashing, config fragments."""

import shutil
from pathlib import Path

import pytest

from rcupending_tools.errors import UserError
from rcupending_tools.lab import build
from rcupending_tools.lab.packages import PkgVer
from rcupending_tools.lab.recipe import (
    config_diff,
    config_mismatches,
    parse_fragment,
    parse_recipe,
    pick_source,
    recipe_hash,
    satisfies,
    scripts_config_args,
    tree_key,
)

REPO_RECIPE = Path(__file__).resolve().parents[2] / "kernel" / "lab-6.12"


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    d = tmp_path / "lab-6.12"
    shutil.copytree(REPO_RECIPE, d)
    return d


def test_repo_recipe_parses():
    r = parse_recipe(REPO_RECIPE)
    assert r.name == "6.12"
    assert r.package == "linux-source-6.12"
    assert [v.name for v in r.variants] == ["stock", "rcupending"]
    assert [v.label(r) for v in r.variants] == ["6.12-stock", "6.12-rcupending"]
    assert r.variant("rcupending").options == {"KVFREE_RCU_PENDING": "y"}
    assert r.variant("stock").options == {"KVFREE_RCU_PENDING": "n"}
    assert all(p.is_file() for p in r.patches) and len(r.patches) == 3
    assert r.module_dir is not None and (r.module_dir / "rcupending_lab.c").is_file()
    assert r.module_name == "rcupending_lab"
    with pytest.raises(UserError, match="no variant 'x'"):
        r.variant("x")


def test_variants_differ_in_one_option_only():
    r = parse_recipe(REPO_RECIPE)
    stock, patched = r.variants
    assert set(stock.options) == set(patched.options) == {"KVFREE_RCU_PENDING"}
    frag = parse_fragment(r.fragment.read_text())
    assert frag["KVFREE_RCU_PENDING"] == "n"  # the fragment itself builds stock


def test_repo_fragment_has_the_lab_options():
    frag = parse_fragment((REPO_RECIPE / "config.fragment").read_text())
    for opt in ("FAULT_INJECTION", "FAILSLAB", "FAIL_PAGE_ALLOC", "FAULT_INJECTION_DEBUG_FS",
                "RCU_NOCB_CPU", "RCU_LAZY", "MODULES", "DEBUG_INFO_BTF", "KPROBES",
                "IKHEADERS", "BCACHEFS_FS", "DEBUG_FS"):  # fmt: skip
        assert frag[opt] == "y", opt
    assert frag["RCU_SCALE_TEST"] == "m"
    assert frag["DEBUG_INFO_REDUCED"] == "n"


def test_parse_fragment_forms():
    text = (
        "# a comment\n\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n"
        'CONFIG_D=42\nCONFIG_E="-lab"\n'
    )
    assert parse_fragment(text) == {"A": "y", "B": "m", "C": "n", "D": "42", "E": '"-lab"'}
    with pytest.raises(UserError, match="line 1"):
        parse_fragment("NOT_CONFIG=y\n")


def test_scripts_config_args():
    args = scripts_config_args({"A": "y", "B": "m", "C": "n", "D": "42", "E": '"-lab"'})
    assert args == [
        "--enable", "A", "--module", "B", "--disable", "C",
        "--set-val", "D", "42", "--set-str", "E", "-lab",
    ]  # fmt: skip


def test_config_mismatches_and_diff():
    cfg = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n"
    assert config_mismatches(cfg, {"A": "y", "B": "n", "C": "m", "Z": "n"}) == []
    assert config_mismatches(cfg, {"A": "n", "Z": "y"}) == [
        "CONFIG_A=n (got y)",
        "CONFIG_Z=y (got n)",
    ]
    other = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=m\n"
    assert config_diff(cfg, other) == {"B": ("n", "y")}


def test_satisfies_and_pick_source(recipe_dir):
    r = parse_recipe(recipe_dir)
    assert satisfies("6.12.107-1", r.version)
    assert satisfies("6.12.110-1~bpo12+1", r.version)
    assert not satisfies("6.12.95-1~bpo12+1", r.version)
    assert not satisfies("6.13.2-1", r.version)
    cands = [
        PkgVer("linux-source-6.12", "6.12.95-1~bpo12+1", "bookworm-backports"),
        PkgVer("linux-source-6.12", "6.12.107-1", "trixie"),
        PkgVer("linux-source-6.12", "6.12.109-1", "trixie"),
        PkgVer("linux-source-6.13", "6.13.1-1", "trixie"),
    ]
    assert pick_source(r, cands).version == "6.12.109-1"
    with pytest.raises(UserError, match="available: 6.12.95-1~bpo12\\+1"):
        pick_source(r, cands[:1])


def test_hash_follows_every_recipe_file(recipe_dir):
    r = parse_recipe(recipe_dir)
    h, t = recipe_hash(r, "6.12.107-1"), tree_key(r, "6.12.107-1")
    assert h == recipe_hash(parse_recipe(recipe_dir), "6.12.107-1")  # stable
    assert recipe_hash(r, "6.12.109-1") != h and tree_key(r, "6.12.109-1") != t
    # the module and the fragment change the build, not the source tree
    (recipe_dir / "module" / "rcupending_lab.c").write_text("/* changed */\n")
    r2 = parse_recipe(recipe_dir)
    h2 = recipe_hash(r2, "6.12.107-1")
    assert h2 != h and tree_key(r2, "6.12.107-1") == t
    with (recipe_dir / "config.fragment").open("a") as f:
        f.write("CONFIG_X=y\n")
    assert recipe_hash(parse_recipe(recipe_dir), "6.12.107-1") not in (h, h2)
    # a patch changes both
    with r.patches[0].open("a") as f:
        f.write("\n")
    r3 = parse_recipe(recipe_dir)
    assert tree_key(r3, "6.12.107-1") != t


def test_bad_recipes(recipe_dir):
    toml = recipe_dir / "recipe.toml"
    text = toml.read_text()
    toml.write_text(text.replace('">= 6.12.107-1"', '"about 6.12"'))
    with pytest.raises(UserError, match="bad version constraint"):
        parse_recipe(recipe_dir)
    toml.write_text(text.replace("patches/0001", "patches/missing-0001"))
    with pytest.raises(UserError, match="does not exist"):
        parse_recipe(recipe_dir)
    toml.write_text(text.replace("[[variant]]", "[[other]]"))
    with pytest.raises(UserError, match="no \\[\\[variant\\]\\]"):
        parse_recipe(recipe_dir)
    toml.write_text("name = ")
    with pytest.raises(UserError, match="recipe.toml"):
        parse_recipe(recipe_dir)


def test_install_dirs_resolve_as_lab_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("RCUPENDING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RCUPENDING_SHARED_KERNELS", str(tmp_path / "shared"))
    from rcupending_tools.lab import kernels

    r = parse_recipe(REPO_RECIPE)
    d = build.install_dir(r, r.variant("rcupending"))
    assert d == tmp_path / "cache" / "lab" / "6.12-rcupending"
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(b"")
    (d / "config").write_text("CONFIG_IKHEADERS=y\n")
    assert "lab:6.12-rcupending" in kernels.known_specs()


def test_patched_paths_of_the_series():
    r = parse_recipe(REPO_RECIPE)
    paths = set().union(*(build.patched_paths(p.read_text()) for p in r.patches))
    assert {"fs/bcachefs/rcu_pending.c", "kernel/rcu/pending.c", "include/linux/rcu_pending.h",
            "fs/bcachefs/darray.c", "lib/darray.c", "include/linux/darray.h",
            "kernel/rcu/tree.c", "kernel/rcu/Kconfig"} <= paths  # fmt: skip
    assert build.patched_paths("diff --git a/x/y.c b/x/z.c\n--- a/x/y.c\n") == {"x/y.c", "x/z.c"}

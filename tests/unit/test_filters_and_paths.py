import pytest
from hypothesis import given
from hypothesis import strategies as st

from skynet.common.errors import InvalidPath
from skynet.common.paths import is_within, remote_join, validate_rel_path
from skynet.watcher.filters import IgnoreRules


@pytest.mark.parametrize(
    "name", ["a.tmp", "x/.#lock", "doc.docx~", "~$report.xlsx", "d/.file.swp", "a/.DS_Store", "x.part", "y.crdownload"]
)
def test_temporary_partial_and_swap_files_are_ignored_by_default(name: str) -> None:
    assert IgnoreRules().ignored(name)


def test_extra_globs_match_names_or_relative_paths_and_ignore_whole_folders() -> None:
    rules = IgnoreRules(["*.raw", "cache/*", "build"])
    assert rules.ignored("x/y.raw")
    assert rules.ignored("cache/a")
    assert rules.ignored("build/deep/file")
    assert not rules.ignored("photos/cache.jpg")
    assert not rules.ignored("plain.txt")


@pytest.mark.parametrize("bad", ["../x", "a/../b", "/abs", "a//b", "a/./b", "nul\x00", "line\nbreak", "a/" + "x" * 300])
def test_unsafe_wire_paths_are_refused(bad: str) -> None:
    with pytest.raises(InvalidPath):
        validate_rel_path(bad)


@given(st.text(max_size=200))
def test_no_accepted_path_ever_escapes_the_target_base(path: str) -> None:
    try:
        joined = remote_join("base/dir", path)
    except InvalidPath:
        return
    assert is_within("base/dir", joined)
    assert joined.startswith("base/dir")

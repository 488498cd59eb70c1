"""The folder walk a scan runs: what it reports, what it skips, what it never follows."""

import os
from pathlib import Path

from skynet.watcher.filters import IgnoreRules
from skynet.watcher.scanner import SYMLINK, walk


def _walk(root: Path, rules: IgnoreRules, under: str = "") -> tuple[dict[str, tuple[int, int, int]], dict[str, str]]:
    found: dict[str, tuple[int, int, int]] = {}
    skipped: dict[str, str] = {}
    for listing in walk(str(root), rules, under):
        found.update(listing.found)
        skipped.update((s.path, s.reason) for s in listing.skipped)
    return found, skipped


def test_every_regular_file_is_found_with_its_generation_in_name_order(tmp_path: Path) -> None:
    for rel in ("b/2.bin", "b/1.bin", "a/z/deep.bin", "top.bin"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * len(rel))
    order = [rel for listing in walk(str(tmp_path), IgnoreRules()) for rel, _gen in listing.found]
    assert order == ["top.bin", "a/z/deep.bin", "b/1.bin", "b/2.bin"]
    found, skipped = _walk(tmp_path, IgnoreRules())
    st = os.stat(tmp_path / "b/1.bin")
    assert found["b/1.bin"] == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert skipped == {}


def test_ignored_names_and_path_globs_are_left_out_with_everything_below(tmp_path: Path) -> None:
    for rel in ("keep.txt", "draft.tmp", "cache/a.bin", "photos/cache.jpg", "x/.file.swp", "build/deep/f"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    found, _ = _walk(tmp_path, IgnoreRules(["cache/*", "build"]))
    assert sorted(found) == ["keep.txt", "photos/cache.jpg"]


def test_links_fifos_and_unmappable_names_are_left_out_with_a_reason_and_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.bin").write_bytes(b"ok")
    (root / "to-file").symlink_to(outside / "secret")
    (root / "to-dir").symlink_to(outside)
    os.mkfifo(root / "pipe")
    (root / "bad\nname").write_bytes(b"b")
    found, skipped = _walk(root, IgnoreRules())
    assert list(found) == ["ok.bin"]
    assert skipped["to-file"] == SYMLINK
    assert skipped["to-dir"] == SYMLINK
    assert "FIFO" in skipped["pipe"]
    assert any(path.startswith("bad") for path in skipped)
    # A name that cannot be mapped is a failure to put right (rename it), as when the live events
    # meet it; a link or a FIFO is left out on purpose.
    states = {s.path: s.state for listing in walk(str(root), IgnoreRules()) for s in listing.skipped}
    assert states == {"to-file": "skipped", "to-dir": "skipped", "pipe": "skipped", "bad\nname": "failed"}


def test_a_walk_below_a_folder_reports_paths_from_the_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.bin").write_bytes(b"1")
    (tmp_path / "other.bin").write_bytes(b"1")
    found, _ = _walk(tmp_path, IgnoreRules(), "a")
    assert list(found) == ["a/b/f.bin"]
    assert _walk(tmp_path, IgnoreRules(["a"]), "a") == ({}, {})


def test_a_folder_that_became_a_symlink_is_not_followed_out_of_the_tree(tmp_path: Path) -> None:
    """A scan asked for below ``sub`` (a new folder an event reported) that finds a symlink there
    by the time it lists it: the link is reported, and nothing outside the tree is read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    found, skipped = _walk(root, IgnoreRules(), "sub")
    assert found == {}
    assert skipped == {"sub": SYMLINK}


def test_a_watched_root_that_is_itself_a_symlink_is_walked(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "d").mkdir(parents=True)
    (real / "d" / "f.bin").write_bytes(b"1")
    link = tmp_path / "link"
    link.symlink_to(real)
    found, skipped = _walk(link, IgnoreRules())
    assert list(found) == ["d/f.bin"]
    assert skipped == {}

"""The watcher's index keeps its inode map in step with every change (pure logic)."""

from __future__ import annotations

from skynet.watcher.index import Index

A = (100, 1_000, 11)
B = (200, 2_000, 22)


def test_a_file_is_found_by_its_generation_under_the_path_it_was_last_published_at() -> None:
    index = Index({"a.txt": A})
    assert index.path_of(A) == "a.txt"
    index.move("a.txt", "docs/a.txt")
    assert index.path_of(A) == "docs/a.txt"
    assert "a.txt" not in index and index.get("docs/a.txt") == A


def test_only_the_exact_generation_pairs_a_same_inode_with_new_content_is_a_new_file() -> None:
    index = Index({"a.txt": A})
    assert index.path_of((101, 1_000, 11)) is None
    assert index.path_of((100, 1_001, 11)) is None


def test_a_dropped_or_rewritten_path_is_no_longer_found_by_its_old_inode() -> None:
    index = Index({"a.txt": A, "b.txt": B})
    index.drop("a.txt")
    assert index.path_of(A) is None
    index.set("b.txt", (5, 5, 33))  # replaced by a new file (atomic save: new inode)
    assert index.path_of(B) is None
    assert index.path_of((5, 5, 33)) == "b.txt"


def test_a_folder_moves_with_every_file_under_it_and_nothing_else() -> None:
    index = Index({"d/a": A, "d/sub/b": B, "dx/c": (3, 3, 33)})
    assert sorted(index.move_under("d", "e/d")) == ["d/a", "d/sub/b"]
    assert sorted(index) == ["dx/c", "e/d/a", "e/d/sub/b"]
    assert index.path_of(B) == "e/d/sub/b"
    assert sorted(index.drop_under("e")) == ["e/d/a", "e/d/sub/b"]
    assert sorted(index) == ["dx/c"] and index.path_of(A) is None and not index.has_under("e")

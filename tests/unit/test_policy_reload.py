"""Re-reading unchanged policy files gives the last load's result itself, and any change
(a file's text, a file added or removed, an unreadable file) a new one."""

from __future__ import annotations

from pathlib import Path

from rollout.policy.loading import load_policy_paths
from tests.unit.policy_docs import policy_doc


def doc(name: str, steps: str = "[10, 50]") -> str:
    return policy_doc(name, steps=steps)


def test_unchanged_files_give_the_same_result(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(doc("a"))
    (tmp_path / "b.yaml").write_text("kind: [")  # broken: its error is part of the result
    first = load_policy_paths([tmp_path])
    assert [p.name for p in first.policies] == ["a"] and len(first.errors) == 1
    assert load_policy_paths([tmp_path]) is first
    assert load_policy_paths([tmp_path / "a.yaml"]) is not first  # other paths


def test_every_change_gives_a_new_result(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text(doc("a"))
    first = load_policy_paths([tmp_path])
    a.write_text(doc("a", steps="[20, 50]"))
    edited = load_policy_paths([tmp_path])
    assert edited is not first and edited.policies[0].spec.weights == (20, 50, 100)
    (tmp_path / "b.yaml").write_text(doc("b"))
    added = load_policy_paths([tmp_path])
    assert [p.name for p in added.policies] == ["a", "b"]
    (tmp_path / "b.yaml").unlink()
    removed = load_policy_paths([tmp_path])
    assert [p.name for p in removed.policies] == ["a"] and removed is not added
    a.write_bytes(b"\xff\xfe")  # not UTF-8: an error each time, never a kept result
    unreadable = load_policy_paths([tmp_path])
    assert unreadable.errors and load_policy_paths([tmp_path]) is not unreadable
    a.write_text(doc("a", steps="[20, 50]"))  # back to an earlier text
    again = load_policy_paths([tmp_path])
    assert again.policies[0].spec.weights == (20, 50, 100) and not again.errors


def test_a_missing_path_is_reported_each_time(tmp_path: Path) -> None:
    first = load_policy_paths([tmp_path / "nowhere"])
    assert [e.message for e in first.errors] == ["no such file or directory"]
    assert load_policy_paths([tmp_path / "nowhere"]).errors == first.errors

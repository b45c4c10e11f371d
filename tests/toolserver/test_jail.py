"""The jail's I/O shell against a real filesystem: symlinks out, swaps during a call, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sidecar.toolserver.jail import Jail, JailError, read_all


@pytest.fixture
def jail(tmp_path: Path) -> Jail:
    root = tmp_path / "w"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("A\n")
    (tmp_path / "w-evil").mkdir()
    (tmp_path / "w-evil" / "secret").write_text("S\n")
    (tmp_path / "outside.txt").write_text("O\n")
    return Jail(root)


def read(j: Jail, raw: str) -> bytes:
    fd = j.open_file(j.resolve(raw))
    try:
        return read_all(fd)
    finally:
        os.close(fd)


def test_plain_relative_and_absolute(jail: Jail) -> None:
    assert read(jail, "src/a.py") == b"A\n"
    assert read(jail, f"{jail.root}/src/a.py") == b"A\n"
    assert jail.resolve("src").rel == "src"


def test_workspace_given_through_a_symlink_is_an_alias(tmp_path: Path, jail: Jail) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(jail.root)
    j = Jail(alias)
    assert j.root == jail.root
    assert read(j, f"{alias}/src/a.py") == b"A\n"


@pytest.mark.parametrize(
    ("link", "points_to"),
    [
        ("src/out", "../../outside.txt"),  # relative link out
        ("src/abs", "{tmp}/outside.txt"),  # absolute link out
        ("evil", "../w-evil"),  # a look-alike sibling directory
        ("src/loop", "loop"),  # a loop
        ("dangling", "{tmp}/does-not-exist"),  # dangling, pointing out: a write would create it outside
    ],
)
def test_symlinks_out_are_refused(jail: Jail, tmp_path: Path, link: str, points_to: str) -> None:
    os.symlink(points_to.format(tmp=tmp_path), Path(jail.root, link))
    with pytest.raises(JailError):
        target = jail.resolve(link)
        jail.open_file(target)
    with pytest.raises(JailError):
        jail.write_atomic(jail.resolve(link), b"x")
    assert (tmp_path / "outside.txt").read_text() == "O\n"
    assert not (tmp_path / "does-not-exist").exists()


def test_new_file_under_a_symlinked_directory_out_is_refused(jail: Jail, tmp_path: Path) -> None:
    os.symlink(tmp_path / "w-evil", Path(jail.root, "sneaky"))
    with pytest.raises(JailError, match="outside the workspace"):
        jail.resolve("sneaky/new.txt")
    assert not (tmp_path / "w-evil" / "new.txt").exists()


def test_symlinks_inside_are_followed(jail: Jail) -> None:
    os.symlink("src", Path(jail.root, "code"))
    target = jail.resolve("code/a.py")
    assert target.rel == "src/a.py" and target.shown == "code/a.py"
    assert read(jail, "code/a.py") == b"A\n"


def test_a_symlink_swapped_in_after_the_check_fails_the_open(jail: Jail, tmp_path: Path) -> None:
    target = jail.resolve("src/a.py")  # checked while src is a real directory
    os.rename(Path(jail.root, "src"), Path(jail.root, "src-old"))
    os.symlink(tmp_path / "w-evil", Path(jail.root, "src"))  # ... then src is swapped for a link out
    (tmp_path / "w-evil" / "a.py").write_text("STOLEN\n")
    with pytest.raises(JailError, match="changed during the call"):
        jail.open_file(target)
    with pytest.raises(JailError):
        jail.write_atomic(target, b"x")
    assert (tmp_path / "w-evil" / "a.py").read_text() == "STOLEN\n"


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(jail: Jail, tmp_path: Path) -> None:
    target = jail.resolve("src/a.py")
    os.unlink(target.real)
    os.symlink(tmp_path / "outside.txt", target.real)
    with pytest.raises(JailError, match="symlink"):
        jail.open_file(target)


def test_directories_and_special_files(jail: Jail) -> None:
    with pytest.raises(JailError, match="directory"):
        jail.open_file(jail.resolve("src"))
    with pytest.raises(JailError, match="root"):
        jail.open_file(jail.resolve("."))
    os.mkfifo(Path(jail.root, "pipe"))
    with pytest.raises(JailError, match="not a regular file"):
        jail.open_file(jail.resolve("pipe"))  # would block forever if opened for reading normally


def test_missing_file(jail: Jail) -> None:
    with pytest.raises(FileNotFoundError):
        jail.open_file(jail.resolve("src/missing.py"))


def test_atomic_write_replaces_the_inode_and_keeps_the_mode(jail: Jail) -> None:
    path = Path(jail.root, "src/a.py")
    path.chmod(0o750)
    before = path.stat()
    created = jail.write_atomic(jail.resolve("src/a.py"), b"B\n")
    after = path.stat()
    assert not created
    assert path.read_bytes() == b"B\n"
    assert after.st_ino != before.st_ino  # a new file renamed over the old one
    assert stat.S_IMODE(after.st_mode) == 0o750
    assert sorted(os.listdir(Path(jail.root, "src"))) == ["a.py"]  # no temporary file left behind


def test_atomic_write_creates_parents(jail: Jail) -> None:
    assert jail.write_atomic(jail.resolve("new/deep/file.txt"), b"N")
    assert Path(jail.root, "new/deep/file.txt").read_bytes() == b"N"


def test_writes_into_git_or_over_directories_are_refused(jail: Jail) -> None:
    Path(jail.root, ".git").mkdir()
    with pytest.raises(JailError, match=r"\.git"):
        jail.write_atomic(jail.resolve(".git/config"), b"[core]\n\tfsmonitor = evil\n")
    with pytest.raises(JailError, match="directory"):
        jail.write_atomic(jail.resolve("src"), b"x")


def test_a_symlink_target_file_inside_is_replaced_not_followed(jail: Jail) -> None:
    os.symlink("src/a.py", Path(jail.root, "alias.py"))
    jail.write_atomic(jail.resolve("alias.py"), b"via alias\n")  # resolves to src/a.py, writes the real file
    assert Path(jail.root, "src/a.py").read_bytes() == b"via alias\n"
    assert os.path.islink(Path(jail.root, "alias.py"))


def test_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        Jail(tmp_path / "file")

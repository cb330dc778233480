"""Building metajax's C++ kernels: cached by content, rebuilt when the source changes, and a
clear error when the compiler or the compilation fails."""

import pytest

from metajax.kernels import build


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_KERNEL_CACHE", str(tmp_path / "kernels"))
    return tmp_path / "kernels"


def test_build_is_cached_and_keyed_by_the_source(cache, tmp_path, monkeypatch):
    path = build.build()
    assert path.parent == cache and path.exists()
    built_at = path.stat().st_mtime_ns
    assert build.build() == path and path.stat().st_mtime_ns == built_at  # not rebuilt
    changed = tmp_path / "conv.cc"
    changed.write_text(build.SOURCE.read_text() + "\n// a change\n")
    monkeypatch.setattr(build, "SOURCE", changed)
    assert build.library_path() != path
    assert not list(cache.glob("*.so.tmp*")) and not list(cache.glob("tmp*"))


def test_compile_error_names_the_file_and_shows_the_compiler_output(cache, tmp_path, monkeypatch):
    broken = tmp_path / "conv.cc"
    broken.write_text("this is not C++;\n")
    monkeypatch.setattr(build, "SOURCE", broken)
    with pytest.raises(build.KernelUnavailableError, match=r"compiling conv.cc failed(.|\n)*error"):
        build.build()
    assert not list(cache.iterdir())  # no half-written library left behind


def test_missing_compiler_is_a_clear_error(cache, monkeypatch):
    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.KernelUnavailableError, match=r"no C\+\+ compiler found"):
        build.build()

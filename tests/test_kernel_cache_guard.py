"""The cache guard of ``hmnumba.kernels``: numba checks a cached function
against its own file only, so when any kernel file changes, the package's
cached kernels are deleted before one of them can run stale inlined code."""
import hmnumba.kernels as kernels


def _fill(directory):
    names = ["compress.compress_blocks-165.py311.nbi", "compress.compress_blocks-165.py311.1.nbc",
             "factors.aca_partial-74.py311.nbi", "_kernels.other-3.py311.nbi", "notes.txt"]
    for name in names:
        (directory / name).write_text("x")
    return names


def test_a_changed_kernel_file_clears_the_package_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "_cache_directory", lambda: str(tmp_path))
    monkeypatch.setattr(kernels, "_source_digest", lambda directory: "old")
    _fill(tmp_path)
    assert kernels._guard_cache() == 3          # no stamp yet: the cache is not trusted
    left = sorted(p.name for p in tmp_path.iterdir())
    # files of other modules stay (a kernel file is named after its module)
    assert left == ["_kernels.other-3.py311.nbi", kernels._STAMP, "notes.txt"]
    assert (tmp_path / kernels._STAMP).read_text() == "old"
    _fill(tmp_path)
    assert kernels._guard_cache() == 0          # same sources: the cache is kept
    assert (tmp_path / "compress.compress_blocks-165.py311.nbi").exists()
    monkeypatch.setattr(kernels, "_source_digest", lambda directory: "new")
    assert kernels._guard_cache() == 3          # a kernel file changed
    assert (tmp_path / kernels._STAMP).read_text() == "new"


def test_the_digest_follows_every_kernel_file(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    (tmp_path / "c.txt").write_text("not a source")
    first = kernels._source_digest(str(tmp_path))
    (tmp_path / "c.txt").write_text("still not a source")
    assert kernels._source_digest(str(tmp_path)) == first
    (tmp_path / "b.py").write_text("y = 3\n")
    assert kernels._source_digest(str(tmp_path)) != first


def test_no_cache_directory_means_nothing_to_guard(monkeypatch):
    monkeypatch.setattr(kernels, "_cache_directory", lambda: None)
    assert kernels._guard_cache() == 0

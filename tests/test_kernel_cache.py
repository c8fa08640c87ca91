"""Compiled kernels on a read-only install: cached where it is writable, never a crash.

The install is made read-only for real (a read-only bind mount in a private mount namespace,
which even root cannot write through); skipped where the machine does not allow that.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pm4324"
PROBE = ("import numba, numpy as np; import pm4324.metering.engine; "
         "from pm4324.sources.simulator import _quantise; "
         "x = np.array([[0.26, -0.74]]); "
         "_quantise(x, 1.0, 0.5, np.empty(0), np.empty(0, dtype=np.int64), 0.0); "
         "print(numba.config.CACHE_DIR, x.tolist())")


def _read_only_install(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "pm4324", ignore=shutil.ignore_patterns("__pycache__"))
    return site


def _run_read_only(site: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a read-only bind mount")
    script = f'mount --bind -o ro "{site}" "{site}" && exec "{sys.executable}" -c "$PROBE"'
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                       timeout=300, env={**env, "PYTHONPATH": str(site), "PROBE": PROBE})
    if "mount:" in r.stderr or "unshare:" in r.stderr:
        pytest.skip(f"no private mount namespace here: {r.stderr.strip()}")
    return r


def _env_without_caches(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["HOME"] = str(home)
    return env


def test_read_only_install_without_a_writable_home_runs_uncached_with_a_warning(tmp_path):
    site = _read_only_install(tmp_path)
    r = _run_read_only(site, _env_without_caches(site))  # HOME inside the read-only mount
    assert r.returncode == 0, r.stderr
    assert "cannot cache function" not in r.stderr
    assert "no writable cache for the compiled kernels" in r.stderr
    cache_dir, values = r.stdout.split(maxsplit=1)
    assert Path(cache_dir).name.startswith("pm4324-kernels-")
    assert not Path(cache_dir).exists()  # a per-run directory, removed at exit
    assert values.strip() == "[[0.5, -0.5]]"  # the compiled kernel ran: 0.26, -0.74 to 0.5 LSB


def test_read_only_install_caches_in_the_users_cache_directory(tmp_path):
    site = _read_only_install(tmp_path)
    env = _env_without_caches(site)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    r = _run_read_only(site, env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.split()[0] == str(tmp_path / "cache" / "pm4324" / "numba")
    assert list((tmp_path / "cache" / "pm4324" / "numba").rglob("*.nbi"))  # kept for next time


def test_kernels_cached_says_when_a_first_run_must_compile(tmp_path):
    probe = "from pm4324.cli.precompile import kernels_cached; print(kernels_cached())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # an empty cache
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.stdout.strip() == "False", r.stderr


def test_run_says_it_is_compiling(tmp_path, monkeypatch, capsys):
    import asyncio
    import shutil as sh

    from pm4324 import app
    from pm4324.cli import cli

    monkeypatch.setattr(app, "kernels_cached", lambda: False)  # as on a fresh install
    settings = tmp_path / "s.toml"
    sh.copy(PACKAGE / "data" / "building-settings.toml", settings)
    args = cli.build_parser().parse_args(["run", "--settings", str(settings), "--seconds", "1",
                                          "--speed", "50", "--no-modbus", "--json"])
    from pm4324.config.settings_parse import load_settings

    assert asyncio.run(app.run_meter(load_settings(settings), args, str(settings))) == 0
    captured = capsys.readouterr()
    assert "Compiling the metering kernels (once after an install or update" in captured.err
    assert captured.out.count('"seq"') == 1

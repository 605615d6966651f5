"""Debian's headless Chromium for the tests that read pages as a reader would (CI installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(not BROWSER and not os.environ.get("GLIOMASEG_REQUIRE_BROWSER"),
                                   reason="Chromium not installed (CI installs it)")
# WebGL2 without a GPU: SwiftShader, Chromium's software renderer. Every request off this machine is
# refused (no name resolves, and the proxy is a closed port), so a page that needs the network breaks.
WEBGL = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]


def chromium(profile: Path, *arguments: str, timeout: int = 180) -> str:
    """Run headless Chromium with a fresh profile; its stdout (e.g. ``--dump-dom``)."""
    assert BROWSER, "GLIOMASEG_REQUIRE_BROWSER is set but no chromium is installed"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    return subprocess.run([BROWSER, *flags, *arguments], check=True, capture_output=True, text=True, timeout=timeout).stdout

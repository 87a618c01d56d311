"""scripts/docs_images.py, which captures the docs' pictures of the live view and the summary, runs and captures both."""

from __future__ import annotations

from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[2]


def test_docs_images_are_captured_from_a_real_run(tmp_path):
    script = ROOT / "scripts" / "docs_images.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--rows", "60", "--latency", "0.01"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    live, summary = (tmp_path / "live-view.svg").read_text(), (tmp_path / "summary.svg").read_text()
    assert "to_fr" in live and "rows/s" in live and "engine&#160;llm" in live
    assert "reviews:&#160;completed" in summary and "Outputs:" in summary
    assert (ROOT / "docs" / "images" / "live-view.svg").exists(), "the docs show the committed capture"

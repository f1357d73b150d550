"""The README's Python examples run as written (on the real files of ../shared/data).

The blocks are run in order in one fresh interpreter, as a reader pasting them would (later
blocks use names of earlier ones), from a scratch directory so that nothing lands in the
repository; ``../shared/data`` is replaced by the data location of the test session.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The fenced ```python blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_readme_python_examples_run(shared_data: Path, tmp_path: Path):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 5
    script = "\n".join(
        f"print('--- block {i}', flush=True)\n{b.replace('../shared/data', str(shared_data))}"
        for i, b in enumerate(blocks)
    )
    (tmp_path / "readme_examples.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "readme_examples.py"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"README example failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    out = proc.stdout
    assert all(f"--- block {i}" in out for i in range(len(blocks)))
    # what the examples print is what they claim: the converter's compound correction, the
    # DNN among the methods, median responses near 1 where the file has jets
    assert "['Summer19UL18_V5_MC_L1L2_AK4PFchs']" in out
    for method in ("standard", "deepsets"):
        m = re.search(
            rf"^{method} \(0\.0, 1\.3\) \(50\.0, 3000\.0\) 29 jets (\S+)$",
            out,
            re.MULTILINE,
        )
        assert m, f"no barrel line of {method} in:\n{out[-3000:]}"
        assert abs(float(m.group(1)) - 1.0) < 0.08, m.group(0)


@pytest.mark.parametrize("text", ["```python\nx = 1\n```\n", "```bash\nls\n```\n"])
def test_python_blocks_parser(text):
    assert python_blocks(text) == (["x = 1\n"] if "python" in text else [])

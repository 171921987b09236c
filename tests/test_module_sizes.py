"""No module of lightning_redd is over 300 lines without a reason stated in its docstring (a
paragraph starting "One file, over 300 lines:")."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_redd"
LIMIT = 300
REASON = "One file, over 300 lines:"


def unexplained(root: Path) -> list[str]:
    """``path (N lines)`` of each module under ``root`` over :data:`LIMIT` lines whose docstring gives no reason."""
    out = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        count = len(text.splitlines())
        doc = " ".join((ast.get_docstring(ast.parse(text)) or "").split())
        if count > LIMIT and REASON not in doc:
            out.append(f"{path.relative_to(root)} ({count} lines)")
    return out


def test_every_long_module_says_why_it_is_one_file():
    assert len(list(PACKAGE.rglob("*.py"))) > 50
    missing = unexplained(PACKAGE)
    assert not missing, f"split them, or add a paragraph '{REASON} <why>' to their docstrings: {', '.join(missing)}"


def test_the_check_finds_a_long_module_without_a_reason(tmp_path):
    body = "x = 1\n" * LIMIT
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text('"""A module."""\n' + body)
    (tmp_path / "said.py").write_text(f'"""A module.\n\n{REASON} one algorithm.\n"""\n' + body)
    (tmp_path / "short.py").write_text('"""A module."""\n' + "x = 1\n" * (LIMIT - 1))
    assert unexplained(tmp_path) == [f"sub/long.py ({LIMIT + 1} lines)"]

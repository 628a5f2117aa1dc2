"""Write docs/options.md from the option declarations (tests/test_options.py checks it).

python scripts/write_options_doc.py
"""

from pathlib import Path

from clusterclean.options import options_page
from clusterclean.pipeline import RUN_OPTIONS

if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    path.write_text(options_page(RUN_OPTIONS), encoding="utf-8")
    print(f"wrote {path}")

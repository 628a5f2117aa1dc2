"""Write docs/options.md and the README's option tables from the option declarations.

python scripts/write_options_doc.py

``tests/test_options.py`` fails when either disagrees with the declarations.
"""

from pathlib import Path

from clusterclean.options import fill_option_tables, options_page
from clusterclean.pipeline import RUN_OPTIONS

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[1]
    page = root / "docs" / "options.md"
    page.write_text(options_page(RUN_OPTIONS), encoding="utf-8")
    readme = root / "README.md"
    readme.write_text(
        fill_option_tables(readme.read_text(encoding="utf-8"), RUN_OPTIONS), encoding="utf-8"
    )
    print(f"wrote {page} and the option tables of {readme}")

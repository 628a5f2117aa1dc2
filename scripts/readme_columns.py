"""Fill the README's report column tables from clusterclean.report.TABLES.

python scripts/readme_columns.py

``tests/test_readme.py`` fails when the README's tables disagree with TABLES.
"""

from pathlib import Path

from clusterclean.report import fill_column_tables

if __name__ == "__main__":
    readme = Path(__file__).resolve().parents[1] / "README.md"
    readme.write_text(fill_column_tables(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote the report column tables of {readme}")

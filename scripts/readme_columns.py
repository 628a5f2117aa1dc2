"""Print the Markdown tables of every report column, from clusterclean.report.TABLES.

python scripts/readme_columns.py   # paste into README.md, "Report columns"
"""

from clusterclean.report import TABLES


def main() -> None:
    lines = ["### Report columns", ""]
    for name, columns in TABLES.items():
        lines += [f"**`{name}.parquet`**", "", "| column | type | meaning |", "|---|---|---|"]
        lines += [f"| `{c}` | {t} | {d} |" for c, (t, d) in columns.items()]
        lines.append("")
    lines.append(
        "`components.parquet` also has one boolean `is_bad_component_<metric>_<threshold>` "
        "column per metric and threshold (see Scores)."
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

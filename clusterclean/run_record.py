"""``run.json``: the typed, versioned record of a run, validated on read.

One frozen dataclass, :class:`RunRecord`, is what :func:`clusterclean.pipeline.run`
fills, what :func:`clusterclean.report.write_report_folder` writes (adding the run id
and the manifest) and what :func:`clusterclean.report.read_report` returns as
``Report.run_info``. Its fields are the top-level keys of ``run.json``; reading a
file checks the schema version, the required keys and each field's JSON type, so a
damaged or foreign file is one clear error instead of a ``KeyError`` three modules
later. A record is also a read-only mapping (``record["counts"]``), as the dict it
replaces was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunRecord", "RUN_RECORD_FIELDS"]

#: Sections written only when set (the other fields are always written).
_WHEN_SET = ("distributed", "incremental", "run_id", "manifest")


@dataclass(frozen=True, eq=False)  # equal to any mapping with the same items
class RunRecord(Mapping):
    """What a run did: ``run.json``.

    Attributes
    ----------
    parameters : dict
        Every :class:`~clusterclean.pipeline.RunConfig` field with its value.
    versions : dict of str to str
        clusterclean, Python and the numeric libraries.
    timings : dict of str to float
        Seconds per stage, and ``total`` / ``write``.
    counts : dict
        Images, components, edges, label issues, duplicates, flags.
    thresholds : dict
        Each flag column's resolved cut.
    excluded_attributes : list of str
        Attributes never scored: the user's plus the detected varying ones.
    varying_attributes, mixed_components : dict
        The two detections' figures (:mod:`clusterclean.scoring`, :mod:`clusterclean.mixed`).
    embedding : dict
        Backbone and dimension of the vectors, and the engine that ran the backbone
        (``{"name", "threads", "detail"}``; None for vectors given by the user).
    refinement, adaptation : dict or None
        The fitted transforms' summaries and files (None when off).
    index : dict or None
        The kNN index used (:func:`clusterclean.index.choose_index`).
    calibration : dict or None
        ``min_similarity="auto"``'s estimates.
    grouping_check : dict or None
        Whether the labels agree that the components are single identities
        (:func:`clusterclean.trust.check_grouping`); None when too few pairs.
    distributed, incremental : dict or None
        Written by :func:`~clusterclean.distributed.run_distributed` and
        :func:`~clusterclean.incremental.add_images` only.
    run_id : str or None
        The run's id, also in every table's metadata (set when written).
    manifest : dict or None
        Every other file of the folder with its size and digest (set when written).
    schema_version : str
        The report schema version.
    extra : dict
        Top-level keys this version does not know (kept, written back).
    """

    parameters: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    excluded_attributes: list[str] = field(default_factory=list)
    varying_attributes: dict[str, Any] = field(default_factory=dict)
    mixed_components: dict[str, Any] = field(default_factory=dict)
    embedding: dict[str, Any] = field(default_factory=dict)
    refinement: dict[str, Any] | None = None
    adaptation: dict[str, Any] | None = None
    index: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    grouping_check: dict[str, Any] | None = None
    distributed: dict[str, Any] | None = None
    incremental: dict[str, Any] | None = None
    run_id: str | None = None
    manifest: dict[str, Any] | None = None
    schema_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ mapping
    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``run.json`` (sections in :data:`_WHEN_SET` only when set)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and (f.name in _WHEN_SET or f.name == "schema_version"):
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def replace(self, **changes: Any) -> RunRecord:
        """A copy with ``changes`` (unknown names go to ``extra``)."""
        known = {k: v for k, v in changes.items() if k in RUN_RECORD_FIELDS}
        extra = {k: v for k, v in changes.items() if k not in RUN_RECORD_FIELDS}
        return dataclasses.replace(self, **known, extra={**self.extra, **extra})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "run.json") -> RunRecord:
        """A record from a JSON object, each known field checked for its JSON type.

        Raises ``ValueError`` (the caller words it for its file) naming the field.
        """
        if isinstance(data, RunRecord):
            return data
        known = {k: v for k, v in data.items() if k in RUN_RECORD_FIELDS}
        for name, value in known.items():
            expected = _JSON_TYPES[name]
            if not isinstance(value, expected):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in expected)
                raise ValueError(
                    f"{where}: field {name!r} must be {names}, not {type(value).__name__}"
                )
        extra = {k: v for k, v in data.items() if k not in RUN_RECORD_FIELDS}
        return cls(**known, extra=extra)


RUN_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "extra")

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    name: (list,) if name == "excluded_attributes" else (dict, type(None))
    for name in RUN_RECORD_FIELDS
}
_JSON_TYPES.update(
    {
        name: (dict,)
        for name in ("parameters", "versions", "timings", "counts", "thresholds", "embedding")
    }
)
_JSON_TYPES.update(
    {
        "varying_attributes": (dict,),
        "mixed_components": (dict,),
        "run_id": (str, type(None)),
        "schema_version": (str, type(None)),
        "excluded_attributes": (list, tuple),
    }
)

"""How a stage declares its options: once, with type, range, default and one line of help.

Modelled on scikit-learn's ``_parameter_constraints``: each stage module holds a
tuple of :class:`Option` (``OPTIONS``); from those declarations, and nowhere else,
come

* the stage's frozen options object and :class:`~clusterclean.pipeline.RunConfig`
  (:func:`make_options`: fields, defaults, the docstring, the checks);
* the CLI flags with their help, choices and defaults (:func:`add_flags`);
* ``run.json``'s ``parameters`` (the RunConfig fields) and ``docs/options.md``
  and the README's option tables (:func:`markdown_table`, :func:`fill_option_tables`).

``tests/test_options.py`` fails when a flag, a default or a doc line disagrees with
its declaration.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._docs import fill_blocks
from ._validation import check_choice, check_float, check_int, in_family
from .errors import InvalidInputError, InvalidTypeError

__all__ = [
    "Option",
    "SEED",
    "declare",
    "defaults",
    "values_of",
    "make_options",
    "add_flags",
    "markdown_table",
    "options_page",
    "fill_option_tables",
    "csv_list",
]

_MISSING = object()


@dataclass(frozen=True)
class Option:
    """One option of one stage.

    Attributes
    ----------
    name : str
        The keyword argument, ``RunConfig`` field and ``run.json`` key.
    default : object
        Its default (a tuple for sequences).
    help : str
        One line: the docstring line, the CLI help and the docs/options.md row.
    kind : str
        ``"int"``, ``"float"``, ``"bool"``, ``"str"`` (free text or a path),
        ``"choice"`` (one of ``choices``) or ``"strs"`` (a sequence of str;
        comma-separated on the CLI).
    low, high : float, optional
        Range of an int or float (inclusive).
    choices : tuple or callable, optional
        Allowed values of a ``"choice"``; a callable reads a registry.
    prefixes : tuple or callable
        A ``"choice"`` may also be ``PREFIX:NAME`` for these prefixes (open families
        such as ``timm:NAME``, whose owner checks ``NAME`` when it is used).
    accepts : tuple, optional
        ``(check, type_name)``: a ``"choice"`` may also be a value that is not a
        str (a loaded :class:`~clusterclean.backbones.Backbone`), which
        ``check(value, func)`` returns or refuses; ``type_name`` names its type in
        the docs. The CLI never gives one.
    nullable : bool
        None is allowed (it means "automatic" or "off": say which in ``help``).
    special : tuple of str
        Words allowed besides a number (``min_similarity="auto"``).
    each : callable, optional
        Check of each item of a ``"strs"`` (``each(item)`` raises).
    one_str : bool
        A ``"strs"`` given one str is that one item (``thresholds="p80"``).
    flag : str, optional
        CLI flag when not ``--name-with-dashes``; ``aliases`` are more flags.
    cli : dict
        Extra ``argparse`` keywords (``nargs``, ``const``, ``metavar``).
    stage : str
        The stage that declares it (the CLI group and the docs section).
    """

    name: str
    default: Any
    help: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple | Callable[[], Iterable[str]] | None = None
    prefixes: tuple | Callable[[], Iterable[str]] = ()
    accepts: tuple[Callable[[Any, str], Any], str] | None = None
    nullable: bool = False
    special: tuple[str, ...] = ()
    each: Callable[[str], Any] | None = None
    one_str: bool = False
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    cli: dict = field(default_factory=dict)
    stage: str = ""

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag or "--" + self.name.replace("_", "-"), *self.aliases)

    def allowed(self) -> tuple:
        choices = self.choices() if callable(self.choices) else self.choices
        return tuple(choices or ())

    def allowed_prefixes(self) -> tuple[str, ...]:
        return tuple(self.prefixes() if callable(self.prefixes) else self.prefixes)

    def check(self, value: Any, func: str) -> Any:
        """``value`` checked (scikit-learn's wording) and normalised; raises otherwise."""
        if value is None and self.nullable:
            return None
        if self.special and isinstance(value, str):
            if value in self.special:
                return value
            raise InvalidInputError(
                f"The {self.name!r} parameter of {func} must be {self.expected()}. Got "
                f"{value!r} instead."
            )
        if self.kind == "int":
            check_int(value, self.name, func, min_value=self.low, max_value=self.high)
        elif self.kind == "float":
            check_float(value, self.name, func, low=self.low, high=self.high)
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise InvalidTypeError(
                    f"The {self.name!r} parameter of {func} must be a bool. Got {value!r} instead."
                )
        elif self.kind == "choice":
            if self.accepts is not None and not isinstance(value, str):
                return self.accepts[0](value, func)
            check_choice(value, self.name, func, self.allowed(), self.allowed_prefixes())
        elif self.kind == "strs":
            if isinstance(value, str) and self.one_str:
                value = (value,)
            if isinstance(value, str):
                raise InvalidTypeError(
                    f"The {self.name!r} parameter of {func} must be a sequence of str. Got "
                    f"{value!r} instead; write ({value!r},)."
                )
            value = tuple(value)
            for item in value if self.each else ():
                self.each(item)
        elif self.kind == "str" and value is not None:
            value = str(value)
        return value

    def expected(self) -> str:
        """What a value must be, in words."""
        if self.kind == "float" and self.special:
            words = " or ".join(repr(s) for s in self.special)
            return f"a float in [{self.low:g}, {self.high:g}] or {words}"
        return self.kind

    def type_name(self) -> str:
        base = {"choice": "str", "strs": "tuple of str"}.get(self.kind, self.kind)
        if self.accepts is not None:
            base += f" or {self.accepts[1]}"
        if self.special:
            base += " or " + " or ".join(repr(s) for s in self.special)
        return base + (" or None" if self.nullable else "")

    def default_text(self) -> str:
        if isinstance(self.default, tuple):
            return ",".join(self.default) or "none"
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)

    def range_text(self) -> str:
        if self.kind == "choice":
            return ", ".join((*self.allowed(), *(f"{p}:NAME" for p in self.allowed_prefixes())))
        if self.kind in ("int", "float") and (self.low is not None or self.high is not None):
            low = "" if self.low is None else f"{self.low:g}"
            high = "" if self.high is None else f"{self.high:g}"
            return f"[{low}, {high}]" if high else f">= {low}"
        return ""


#: The one option every stage with a random choice shares (``run`` owns it).
SEED = Option(
    "seed",
    0,
    "seed of every random choice (Louvain communities, samples, the head's training); "
    "recorded in run.json",
    "int",
    low=0,
    stage="run",
)


def defaults(options: Sequence[Option]) -> dict[str, Any]:
    """``{name: default}`` of ``options``: what a stage function's signature defaults to."""
    return {o.name: o.default for o in options}


def values_of(options: Sequence[Option], config: Any) -> dict[str, Any]:
    """``{name: config.name}`` for ``options``: a stage's keywords taken from a RunConfig."""
    return {o.name: getattr(config, o.name) for o in options}


def declare(stage: str, *options: Option) -> tuple[Option, ...]:
    """A stage's options, each tagged with the stage's name."""
    return tuple(dataclasses.replace(o, stage=stage) for o in options)


def make_options(
    name: str,
    options: Sequence[Option],
    *,
    doc: str,
    func: str,
    module: str,
    checks: Callable[[Any], None] | None = None,
) -> type:
    """A frozen dataclass with one field per option, checked once in ``__post_init__``.

    The docstring is ``doc`` followed by an Attributes section made from the
    declarations. ``func`` names the function whose wording the errors use;
    ``checks(self)`` runs after, for rules across options.
    """
    names = [o.name for o in options]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: an option is declared twice: {names}")
    by_name = {o.name: o for o in options}

    def __post_init__(self) -> None:
        for option in options:
            value = option.check(getattr(self, option.name), func)
            object.__setattr__(self, option.name, value)
        if checks is not None:
            checks(self)

    lines = [inspect.cleandoc(doc), "", "Attributes", "----------"]
    for o in options:
        lines += [f"{o.name} : {o.type_name()}", f"    {o.help}; default {o.default_text()}."]
    cls = dataclasses.make_dataclass(
        name,
        [(o.name, o.type_name(), field(default=o.default)) for o in options],
        frozen=True,
        namespace={"__post_init__": __post_init__, "OPTIONS": tuple(options)},
    )
    cls.__doc__ = "\n".join(lines) + "\n"
    cls.__module__ = module

    def checked(cls, func: str, **values: Any):
        """An instance from ``values``, checked with the wording of ``func``."""
        for key, value in values.items():
            by_name[key].check(value, func)
        return cls(**values)

    def of(cls, source: Any):
        """An instance from the same-named attributes of ``source`` (e.g. a RunConfig)."""
        return cls(**{o.name: getattr(source, o.name) for o in options})

    cls.checked = classmethod(checked)
    cls.of = classmethod(of)
    cls.as_dict = dataclasses.asdict
    return cls


def csv_list(text: str) -> tuple[str, ...]:
    """``a,b,c`` -> ``("a", "b", "c")`` (the CLI form of a ``"strs"`` option)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _number_or_special(option: Option) -> Callable[[str], Any]:
    def parse(text: str):
        if text in option.special:
            return text
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a number in [{option.low:g}, {option.high:g}] or "
                + " or ".join(repr(s) for s in option.special)
                + f", got {text!r}"
            ) from None

    return parse


class _Choices(tuple):
    """argparse ``choices``: the listed names, and also ``PREFIX:NAME`` for ``prefixes``."""

    def __new__(cls, names: Iterable[str], prefixes: Iterable[str]):
        choices = super().__new__(cls, names)
        choices.prefixes = tuple(prefixes)
        return choices

    def __contains__(self, value: object) -> bool:
        return in_family(value, self.prefixes) or super().__contains__(value)


def add_flags(
    parser: argparse.ArgumentParser,
    options: Sequence[Option],
    *,
    defaults: dict[str, Any] | None = None,
) -> None:
    """One CLI flag per option, in an argument group per stage; every default is None.

    A flag left out keeps the declaration's default (the CLI passes only the
    given ones); the help shows that default, or the one in ``defaults`` (a
    command whose own default differs, like ``demo``'s backbone).
    """
    groups: dict[str, Any] = {}
    for o in options:
        group = groups.get(o.stage)
        if group is None:
            group = groups[o.stage] = parser.add_argument_group(o.stage or "options")
        shown = (defaults or {}).get(o.name, o.default_text())
        kwargs: dict[str, Any] = {
            "dest": o.name,
            "default": None,
            "help": f"{o.help} (default: {shown})".replace("%", "%%"),
        }
        if o.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif o.kind == "choice":
            prefixes = o.allowed_prefixes()
            kwargs["choices"] = _Choices(o.allowed(), prefixes) if prefixes else o.allowed()
        elif o.kind == "strs":
            kwargs["type"] = csv_list
        elif o.special:
            kwargs["type"] = _number_or_special(o)
        elif o.kind in ("int", "float"):
            kwargs["type"] = int if o.kind == "int" else float
        kwargs.update(o.cli)
        group.add_argument(*o.flags, **kwargs)


def markdown_table(options: Sequence[Option]) -> str:
    """docs/options.md: one row per option (flag, name, type, range, default, help)."""
    rows = ["| flag | `run()` / `RunConfig` | type | range | default | what it does |"]
    rows.append("|---|---|---|---|---|---|")
    for o in options:
        flags = " / ".join(f"`{f}`" for f in o.flags)
        rows.append(
            f"| {flags} | `{o.name}` | {o.type_name()} | {o.range_text()} | "
            f"{o.default_text()} | {o.help} |"
        )
    return "\n".join(rows) + "\n"


def options_page(options: Sequence[Option]) -> str:
    """docs/options.md: every option of ``run``, stage by stage (generated, never edited)."""
    parts = [
        "# Options of `clusterclean run` / `clusterclean.run()`\n",
        "Generated from the declarations in each stage's module (`OPTIONS`, see "
        "`clusterclean/options.py`) by `python scripts/write_options_doc.py`; "
        "`tests/test_options.py` fails when this page, a flag or a default disagrees "
        "with them. Each name is the keyword of `run()`, the field of `RunConfig` and "
        "the key in `run.json`'s `parameters`.\n",
    ]
    stages: dict[str, list[Option]] = {}
    for o in options:
        stages.setdefault(o.stage, []).append(o)
    for stage, members in stages.items():
        parts.append(f"## {stage}\n")
        parts.append(markdown_table(members))
    return "\n".join(parts)


def fill_option_tables(text: str, options: Sequence[Option]) -> str:
    """Fill every ``<!-- options: stage, ... -->`` block of ``text`` from the declarations.

    The README's option tables are these blocks, so a default or a help line is
    typed once, in its declaration (``python scripts/write_options_doc.py``).
    """

    def table(argument: str) -> str:
        stages = [s.strip() for s in argument.split(",")]
        unknown = sorted(set(stages) - {o.stage for o in options})
        if unknown:
            raise ValueError(f"no option is declared by stage(s) {unknown}")
        return markdown_table([o for o in options if o.stage in stages])

    return fill_blocks(text, "options", table)

"""Finding sample sources by name: built-ins and ADC plug-ins (entry points).

A plug-in package declares, in its own pyproject.toml::

    [project.entry-points."pm4324.sources"]
    myboard = "my_package.module:MyBoardSource"

and ``pm4324 run --source myboard`` then builds it as ``MyBoardSource(settings)``. The
plug-in module is imported only when chosen, so a missing vendor SDK breaks nothing else
(python-can's interface registry does the same). See docs/adc-plugins.md and examples/adc_plugin/.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from pm4324.sources.base import Source, SourceError

GROUP = "pm4324.sources"


def available() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def source_class(name: str) -> type[Source]:
    """The Source subclass registered under ``name``."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        installed = available()
        have = (f"the installed ones are {', '.join(installed)}" if installed else
                "no ADC plug-in is installed (docs/adc-plugins.md says how to install one)")
        raise SourceError(f"--source {name}: no sample source of that name; {have}")
    target = matches[0].value
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SourceError(f"sample source {name!r} ({target}) cannot be loaded: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise SourceError(f"sample source {name!r} ({target}) is not a pm4324 Source")
    return cls

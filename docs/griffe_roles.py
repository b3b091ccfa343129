"""Griffe extension: the Sphinx roles of graphdesc's docstrings become checked cross-references.

graphdesc's docstrings write ``:func:`build_graph``` and ``:class:`~graphdesc.torch.EnergyModel```. When
the API reference is built, each role is resolved to an object of the package: relative names are looked
up from the docstring's own class, module and parent packages. A role that names nothing is a warning, so
``mkdocs build --strict`` fails on a stale or misspelled reference. A resolved one becomes an optional
autoref: a link where the target is rendered in the manual, plain code where it is internal.
"""

from __future__ import annotations

import builtins
import importlib.util
import re

import griffe

ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`(~?)([\w.]+)`")


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg, loader, **kwargs):
        collection = loader.modules_collection
        for obj in _walk(pkg):
            if obj.docstring and ":" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(lambda m: _link(m, obj, collection), obj.docstring.value)


def _walk(obj):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _exists(collection, path: str) -> bool:
    try:
        collection.get_member(path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    return True


def _link(match, obj, collection) -> str:
    short, name = match.group(1), match.group(2)
    scopes, scope = [], obj
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    if name.startswith("."):  # relative to the docstring's package
        candidates = [f"{s}{name}" for s in scopes]
    else:
        candidates = [name] + [f"{s}.{name}" for s in scopes]
    target = next((c for c in candidates if _exists(collection, c)), None)
    if target is None and _external(name):
        return f"`{name}`"  # Python's or another library's: not checked here
    if target is None:
        where = f"{obj.relative_filepath}:{obj.lineno}" if obj.lineno else obj.path
        griffe.logger.warning(f"{where}: {match.group(0)} in the docstring of {obj.path} names nothing in the package")
        return f"`{name}`"
    text = name.rsplit(".", 1)[-1] if short else name
    return f'<autoref identifier="{target}" optional><code>{text}</code></autoref>'


def _external(name: str) -> bool:
    first = name.split(".")[0]
    return first != "graphdesc" and (hasattr(builtins, first) or importlib.util.find_spec(first) is not None)

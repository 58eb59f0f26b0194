"""Where settings come from: the ones built in, the ones installed packages register, and the ones a
config names by import path.

A config's ``setting.name`` is one of

* a built-in name (``gaussian``, ``vae``, ...);
* a name an installed distribution registers in the entry-point group ``model_collapse.settings``
  (in its ``pyproject.toml``: ``[project.entry-points."model_collapse.settings"] gmm = "pkg.mod:GMM"``);
* an import path, ``package.module:SettingClass``.

Built-in settings are imported on first use, so that running the cheap ones never imports PyTorch; the
VAE, language models and conformers have a light *declaration* (config type, metrics, how they run) that
``declared`` reads without their model code, so that ``table`` and ``plot`` work without their extras.

Importing a module runs its code, so the registry imports an import path only when the caller says the
name is the user's own choice (their config, ``--allow-import``: ``vouched.py``): a path recorded in a run directory
is imported only when an installed entry point names the same path. A name an entry point registers is
imported because the user installed that package.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runmarker import enclosing_run_directory
from ..vouched import is_import_path, vouch, vouched
from .base import Declaration, Setting

ENTRY_POINT_GROUP = "model_collapse.settings"


class SettingUnavailable(ConfigError):
    """A setting name that names nothing importable here (unknown, not installed, an extra missing, or
    an import path this caller may not import)."""


# name -> (module, class, extra it needs or None, (module, class) of a light declaration, or None when
# the setting class itself imports nothing heavy)
_BUILT_IN = {
    "linear-regression": ("linear_regression", "LinearRegression", None, None),
    "gaussian": ("gaussian", "Gaussian", None, None),
    "kde": ("kde", "KDE", None, None),
    "discrete": ("discrete", "Discrete", None, None),
    "vae": ("vae", "VAE", "images", ("vae_config", "VAEDeclaration")),
    "language-model": (
        "language_model.setting",
        "LanguageModel",
        "lm",
        ("language_model.config", "LanguageModelDeclaration"),
    ),
    "fine-tuning": (
        "fine_tuning.setting",
        "FineTuning",
        "lm",
        ("fine_tuning.config", "FineTuningDeclaration"),
    ),
    "conformer-diffusion": (
        "conformer_diffusion.setting",
        "ConformerDiffusion",
        "molecules",
        ("conformer_diffusion.config", "ConformerDiffusionDeclaration"),
    ),
}


@dataclass(frozen=True)
class Origin:
    """Where a setting's code comes from, as ``model-collapse list`` shows it and run.json records it."""

    kind: str  # "built in", "entry point" or "import path"
    target: str  # package.module:Class
    distribution: str | None = None  # the installed distribution that provides it
    version: str | None = None  # that distribution's version

    def describe(self) -> str:
        if self.kind == "built in":
            return "built in"
        provider = f"{self.distribution} {self.version}" if self.distribution else "not from an installed package"
        return f"{provider} ({self.kind} {self.target})"

    def to_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "target": self.target, "distribution": self.distribution, "version": self.version}


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` to this installation: from the checkout it was installed
    from (editable or not; PEP 610's direct_url.json says which), else by name."""
    try:
        origin = json.loads(metadata.distribution("model-collapse").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        origin = {}
    url = origin.get("url", "") if isinstance(origin, dict) else ""
    if url.startswith("file://"):
        editable = "-e " if origin.get("dir_info", {}).get("editable") else ""
        return f"pip install {editable}'{Path(url.removeprefix('file://'))}[{extra}]'"
    return f"pip install 'model-collapse[{extra}]'"


def _built_in(module: str, cls: str, name: str, extra: str | None):
    try:
        return getattr(importlib.import_module(f".{module}", __package__), cls)
    except ImportError as error:
        hint = f"; install it with {install_hint(extra)}" if extra else ""
        raise SettingUnavailable(f"setting {name!r} needs {error.name}{hint}") from None


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    """The installed distribution (name, version) that holds the top-level package of ``module``."""
    top = module.split(".")[0]
    names = metadata.packages_distributions().get(top, [])
    if not names:
        return None, None
    try:
        return names[0], metadata.version(names[0])
    except metadata.PackageNotFoundError:
        return names[0], None


def _is_working_directory(entry: str) -> bool:
    here = Path.cwd()
    try:
        return Path(entry or ".").resolve() == here.resolve()
    except OSError:
        return False


@contextlib.contextmanager
def _search_path(working_directory: bool) -> Iterator[None]:
    """sys.path for an import: with the directory the user runs from, last (a module there, as
    ``python -m`` finds it, never hiding an installed package), or without it (a registered name: a
    directory named like the package, a run directory among them, must never stand in for it)."""
    if working_directory:
        here = str(Path.cwd())
        if here not in sys.path:
            sys.path.append(here)
        yield
        return
    before = list(sys.path)
    sys.path[:] = [entry for entry in before if not _is_working_directory(entry)]
    try:
        yield
    finally:
        sys.path[:] = before


def _located(module_name: str, what: str) -> str:
    """Where the top-level package of ``module_name`` would be imported from (``module (path)``, for
    messages), refused if that lies inside a run directory: a run directory never holds code to run."""
    top = module_name.split(".")[0]
    try:
        spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return module_name
    places = [spec.origin] if spec.has_location and spec.origin else list(spec.submodule_search_locations or [])
    for place in places:
        run = enclosing_run_directory(Path(place))
        if run is not None:
            raise ConfigError(
                f"{what}: {top} would be imported from {place}, inside the run directory {run}: a run directory "
                "never holds code that model-collapse runs (run from another directory, or install the package)"
            )
    return f"{module_name} ({places[0]})" if places else module_name


def import_object(target: str, what: str, working_directory: bool = True) -> Any:
    """The object an import path (``package.module:name``) names; one line for anything that goes
    wrong, starting with ``what`` (``setting 'pkg.mod:Cls'``) and naming the file imported.
    ``working_directory``: whether a module in the directory the user runs from may be it (an import
    path the user wrote: yes; an installed entry point's: never)."""
    module_name, _, attribute = target.partition(":")
    with _search_path(working_directory):
        where = _located(module_name, what)
        try:
            obj = importlib.import_module(module_name)
        except ImportError as error:
            missing = error.name or module_name
            raise SettingUnavailable(
                f"{what}: cannot import {where} ({missing} is not installed); install the package that provides it"
            ) from None
        except Exception as error:  # the package's own code failed while importing
            failure = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            raise ConfigError(f"{what}: importing {where} failed: {failure}") from None
    where = f"{module_name} ({obj.__file__})" if getattr(obj, "__file__", None) else where  # the module's own
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: {where} has no {attribute}")
        obj = getattr(obj, part)
    return obj


def load_target(target: str, what: str, working_directory: bool = True):
    """The setting class an import path names; one line for anything that goes wrong, naming ``what``
    (the setting's name as the config wrote it)."""
    obj = import_object(target, f"setting {what!r}", working_directory)
    if not (isinstance(obj, type) and issubclass(obj, Setting)):
        raise ConfigError(f"setting {what!r}: {target} is not a model_collapse Setting subclass")
    return obj


class Registry(Mapping[str, "type[Setting]"]):
    """Setting classes by the name a config uses. Iterating lists the registered names (built in, then
    installed); ``resolve`` also takes import paths."""

    def __init__(self) -> None:
        self._resolved: dict[str, type] = {}  # import paths and entry points imported so far
        self._given: set[str] = set()  # the import paths of classes ``allow`` was given

    def allow(self, setting: str | type) -> str:
        """Let this process import a setting the user names themselves (``--allow-import`` or its alias
        ``--setting``, the Python API's ``setting=``), wherever it is read from later, a run directory
        included (``vouched.py``); returns its name. A class is registered under its import path."""
        if isinstance(setting, type):
            from .base import Setting

            if not issubclass(setting, Setting):
                raise ConfigError(f"setting {setting.__qualname__} is not a model_collapse Setting subclass")
            name = f"{setting.__module__}:{setting.__qualname__}"
            self._resolved[name] = setting
            self._given.add(name)
            return vouch(name)
        return vouch(setting, "--setting")

    @cached_property
    def _entry_points(self) -> dict[str, list[metadata.EntryPoint]]:
        found: dict[str, list[metadata.EntryPoint]] = {}
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name not in _BUILT_IN and not any(e.value == entry.value for e in found.get(entry.name, [])):
                found.setdefault(entry.name, []).append(entry)
        return found

    def refresh(self) -> None:
        """Look for installed entry points again (a package installed since this process started), and
        resolve names to classes afresh (but the classes ``allow`` was given)."""
        self.__dict__.pop("_entry_points", None)
        self._resolved = {name: cls for name, cls in self._resolved.items() if name in self._given}

    def _entry_point(self, name: str) -> metadata.EntryPoint:
        entries = self._entry_points[name]
        if len(entries) > 1:
            providers = ", ".join(f"{e.value} ({_provider(e)})" for e in entries)
            raise ConfigError(
                f"setting {name!r} is registered by more than one package: {providers}; name one by its path"
            )
        return entries[0]

    def registered_paths(self) -> set[str]:
        """The import paths installed entry points name: a run directory may name these."""
        return {entry.value for entries in self._entry_points.values() for entry in entries}

    def origin(self, name: str) -> Origin:
        if name in _BUILT_IN:
            module, cls, _, _ = _BUILT_IN[name]
            return Origin("built in", f"{__package__}.{module}:{cls}")
        if name in self._entry_points:
            entry = self._entry_point(name)
            distribution = entry.dist.metadata["Name"] if entry.dist is not None else None
            version = entry.dist.version if entry.dist is not None else None
            return Origin("entry point", entry.value, distribution, version)
        if is_import_path(name):
            return Origin("import path", name, *_distribution_of(name.partition(":")[0]))
        raise self.unknown(name)

    def unknown(self, name: str) -> ConfigError:
        return SettingUnavailable(
            f"setting.name: unknown setting {name!r} (known: {', '.join(self)}; "
            "or an import path, package.module:SettingClass)"
        )

    def resolve(self, name: str, import_paths: bool = True) -> type[Setting]:
        """The setting class ``name`` names. ``import_paths``: whether an import path may be imported
        (False for a name read from a run directory, unless an installed entry point names that path)."""
        if name in _BUILT_IN:
            module, cls, extra, _ = _BUILT_IN[name]
            return _built_in(module, cls, name, extra)
        if name not in self._resolved:
            if name in self._entry_points:
                self._resolved[name] = load_target(self._entry_point(name).value, name, working_directory=False)
            elif is_import_path(name):
                if not import_paths and not vouched(name) and name not in self.registered_paths():
                    raise SettingUnavailable(
                        f"setting {name!r} is an import path recorded in a run directory, which cannot make "
                        f"model-collapse import code: name it yourself (--allow-import {name}) or install the "
                        "package that registers it"
                    )
                self._resolved[name] = load_target(name, name)
            else:
                raise self.unknown(name)
        return self._resolved[name]

    def __getitem__(self, name: str) -> type[Setting]:
        return self.resolve(name)

    def declared(self, name: str, import_paths: bool = True) -> type[Declaration]:
        """What a setting is (``Config``, ``metrics``, ``capabilities``, ``presentation``), without
        importing the model code of a built-in setting that has a light declaration."""
        if name in _BUILT_IN:
            module, cls, extra, declaration = _BUILT_IN[name]
            return _built_in(*(declaration or (module, cls)), name, extra)
        return self.resolve(name, import_paths)

    def unavailable(self, name: str) -> SettingUnavailable | None:
        """Why the built-in setting ``name`` cannot run here (a module of its extra is not installed),
        found without importing anything; None when it can, or when ``name`` is not built in."""
        if name not in _BUILT_IN:
            return None
        extra = _BUILT_IN[name][2]
        if extra is None:
            return None
        for distribution in _extra_distributions(extra):
            try:
                metadata.distribution(distribution)
            except metadata.PackageNotFoundError:
                hint = install_hint(extra)
                return SettingUnavailable(f"setting {name!r} needs {distribution}; install it with {hint}")
        return None

    def known(self, name: object) -> bool:
        """Whether ``name`` names a setting: built in, registered or an import path (not imported here)."""
        return isinstance(name, str) and (name in self or is_import_path(name))

    def __contains__(self, name: object) -> bool:  # Mapping's default would import the setting
        return name in _BUILT_IN or name in self._entry_points

    def __iter__(self) -> Iterator[str]:
        yield from _BUILT_IN
        yield from sorted(self._entry_points)

    def __len__(self) -> int:
        return len(_BUILT_IN) + len(self._entry_points)


def _extra_distributions(extra: str) -> list[str]:
    """The distributions an extra of this package installs, as its installed metadata lists them (the
    extras of pyproject.toml); none when the package runs uninstalled."""
    try:
        requires = metadata.requires("model-collapse") or []
    except metadata.PackageNotFoundError:
        return []
    marker = re.compile(rf"""extra\s*==\s*["']{re.escape(extra)}["']""")
    names = (re.match(r"[A-Za-z0-9_.-]+", requirement) for requirement in requires if marker.search(requirement))
    return [name.group(0) for name in names if name is not None]


def _provider(entry: metadata.EntryPoint) -> str:
    return f"{entry.dist.metadata['Name']} {entry.dist.version}" if entry.dist is not None else "unknown package"


SETTINGS = Registry()

"""What the configuration files say, read as oslo.config reads them, for two things
oslo.config does not do for an operator:

- say which option, value and file a bad value comes from, and what is allowed,
  instead of oslo.config's ``Value for option X from LocationInfo(...) is not
  valid`` (:func:`describe_bad_value`, :func:`clean_message`);
- warn about names nothing reads: a misspelled option or section is silently
  ignored by oslo.config and its default used, which for a safety setting
  (``max_destroy_per_pas = 3``) is the wrong kind of silence
  (:func:`unknown_names`, what ``oslo-config-validator`` reports, at start-up).

Known names are those of the namespaces the sample configuration is generated
from (etc/reaper/reaper-config-generator.conf), oslo.concurrency's (whose
``[oslo_concurrency] lock_path`` the volume step falls back to), and whatever
the program registered itself (its command-line options). Nothing here changes
the configuration.
"""
from __future__ import annotations

import difflib
import glob
import os
import re
from importlib import metadata

from oslo_config import cfg, types

# The sample configuration's namespaces, and oslo.concurrency's.
NAMESPACES = ("reaper", "os_brick", "oslo.log", "oslo.messaging", "oslo.concurrency")


def config_files(conf: cfg.ConfigOpts, argv: list[str] | None = None) -> list[str]:
    """The files ``conf`` was read from, in oslo.config's order: the config files
    (given, or the project's defaults found), then each config dir's ``*.conf``.
    ``argv``: take them from these arguments instead (``conf`` failed to parse)."""
    if argv is None:
        files = list(conf.config_file or [])
        dirs = conf.config_dir or []
        dirs = [dirs] if isinstance(dirs, str) else list(dirs)
    else:
        files, dirs = _from_argv(argv, "--config-file"), _from_argv(argv, "--config-dir")
        files = files or list(conf.default_config_files or [])
        dirs = dirs or list(conf.default_config_dirs or [])
    for d in dirs:
        files += sorted(glob.glob(os.path.join(os.path.expanduser(d), "*.conf")))
    return files


def _from_argv(argv: list[str], flag: str) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            out.append(arg.split("=", 1)[1])
    return out


def parse(files: list[str]) -> list[tuple[str, dict[str, dict[str, list[str]]]]]:
    """(path, {section: {key: [raw values]}}) per file, with oslo.config's parser.
    Files it could not read were reported by oslo.config already: skipped here."""
    out = []
    for path in files:
        sections: dict[str, dict[str, list[str]]] = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError):
            continue
        out.append((path, sections))
    return out


def namespace_opts(namespace: str) -> list[tuple[str, cfg.Opt]]:
    """(group, opt) for every option of an ``oslo.config.opts`` entry point; empty
    when the namespace is not installed."""
    out: list[tuple[str, cfg.Opt]] = []
    if namespace == "reaper":
        # The package's own list, not through the installed entry point (which names
        # whatever module the installed tree had).
        from reaper.conf import opts as conf_opts
        listers = [conf_opts.list_opts]
    else:
        listers = [lambda ep=ep: ep.load()()
                   for ep in metadata.entry_points(group="oslo.config.opts", name=namespace)]
    for lister in listers:
        try:
            listed = lister()
        except Exception:   # noqa: BLE001 - a broken plugin must not stop the reaper
            continue
        for group, opts in listed:
            name = group.name if isinstance(group, cfg.OptGroup) else (group or "DEFAULT")
            out += [(name, opt) for opt in opts]
    return out


def _group_key(section: str) -> str:
    """oslo.config's own normalization: section names are case-insensitive except DEFAULT."""
    return section if section == "DEFAULT" else section.lower()


def known_options(conf: cfg.ConfigOpts) -> dict[str, set[str]]:
    """group -> the option names a file may set in it."""
    known: dict[str, set[str]] = {"DEFAULT": set()}

    def add(group: str, opt: cfg.Opt) -> None:
        known.setdefault(group, set()).update({opt.dest, opt.name.replace("-", "_")})
        for old in opt.deprecated_opts:
            known.setdefault(_group_key(old.group or group), set()).add(
                (old.name or opt.dest).replace("-", "_"))

    for namespace in NAMESPACES:
        for group, opt in namespace_opts(namespace):
            add(_group_key(group), opt)
    for name in conf:       # what the program registered: options and groups
        try:
            value = conf[name]
        except Exception:   # noqa: BLE001 - an option with a bad value is still an option
            known["DEFAULT"].add(name)
            continue
        if isinstance(value, cfg.ConfigOpts.GroupAttr):
            known.setdefault(_group_key(name), set()).update(value)
        else:
            known["DEFAULT"].add(name)
    return known


def unknown_names(conf: cfg.ConfigOpts) -> list[str]:
    """One line per section or option of the config files that nothing reads."""
    known = known_options(conf)
    lines = []
    for path, sections in parse(config_files(conf)):
        for section, options in sections.items():
            group = _group_key(section)
            if group not in known:
                hint = _did_you_mean(group, known)
                lines.append(f"{path}: unknown section [{section}]: its {len(options)} "
                             f"option(s) are ignored{hint}")
                continue
            for key in options:
                if key not in known[group]:
                    hint = _did_you_mean(key, known[group])
                    lines.append(f"{path}: unknown option {key} in [{section}]: "
                                 f"ignored{hint}")
    return lines


def _did_you_mean(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


# -- bad values -------------------------------------------------------------------

def allowed(opt: cfg.Opt) -> str | None:
    """What ``opt`` accepts, in words; None when there is nothing simple to say."""
    t = opt.type
    choices = getattr(t, "choices", None)
    if choices:
        return "one of " + ", ".join(str(c) for c in choices)
    if isinstance(t, types.Boolean):
        return "true or false"
    if isinstance(t, (types.Integer, types.Float)):
        what = "an integer" if isinstance(t, types.Integer) else "a number"
        lo, hi = t.min, t.max
        if lo is not None and hi is not None:
            return f"{what} from {lo} to {hi}"
        if lo is not None:
            return f"{what}, {lo} or more"
        if hi is not None:
            return f"{what}, at most {hi}"
        return what
    return None


def first_bad_value(conf: cfg.ConfigOpts, argv: list[str],
                    extra: list[cfg.Opt] = ()) -> str | None:
    """The first option (of the sample's namespaces, or ``extra`` in [DEFAULT]) whose
    value in the files its type refuses, described; for oslo.config's own early exit
    on a command-line option set in a file (``argument --use_journal: Invalid
    Boolean value``, no file named)."""
    candidates = [("DEFAULT", opt) for opt in extra]
    for namespace in NAMESPACES:
        candidates += namespace_opts(namespace)
    for group, opt in candidates:
        src = where_set(conf, _group_key(group), opt, argv)
        if src is None:
            continue
        try:
            opt.type(src[0])
        except ValueError as e:
            return describe_bad_value(conf, _group_key(group), opt, e, argv)
    return None


def where_set(conf: cfg.ConfigOpts, group: str, opt: cfg.Opt,
              argv: list[str] | None = None) -> tuple[str, str] | None:
    """(raw value, file) of the file that sets the option last (the one that counts),
    or None when no file sets it (environment, command line)."""
    found = None
    names = {opt.dest, opt.name.replace("-", "_")}
    for path, sections in parse(config_files(conf, argv)):
        for section, options in sections.items():
            if _group_key(section) != group:
                continue
            for key in names & set(options):
                found = (options[key][-1], os.path.abspath(path))
    return found


_ORIGIN = re.compile(r" from LocationInfo\(location=<Locations\.(\w+)[^>]*>, detail=(['\"])(.*?)\2\)")


def _reason(error: Exception) -> str:
    text = str(error)
    return text.split(" is not valid: ", 1)[1] if " is not valid: " in text else text


def describe_bad_value(conf: cfg.ConfigOpts, group: str, opt: cfg.Opt,
                       error: Exception, argv: list[str] | None = None) -> str:
    """``[reaper] evacuated_action = nuke in /etc/reaper/reaper.conf is not valid:
    allowed: one of ignore, log, shutdown, reap``."""
    head = f"[{group}] {opt.dest}"
    src = where_set(conf, group, opt, argv)
    if src is not None:
        head += f" = {src[0]} in {src[1]}"
    else:
        m = _ORIGIN.search(str(error))
        if m:
            head += f" (from {m.group(1).replace('_', ' ')} {m.group(3)})"
    words = allowed(opt)
    return f"{head} is not valid: " + (f"allowed: {words}" if words
                                        else clean_message(_reason(error)))


def clean_message(text: str) -> str:
    """Any oslo.config message with its ``from LocationInfo(...)`` turned into words."""
    return _ORIGIN.sub(lambda m: (f" in {m.group(3)}" if m.group(1) == "user"
                                  else f" from {m.group(1).replace('_', ' ')} {m.group(3)}"),
                       text)

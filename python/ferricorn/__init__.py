"""ferricorn: a pre-fork WSGI HTTP server, gunicorn rebuilt in Rust."""


def _extension_missing(err: ImportError) -> ImportError:
    """Say why the compiled extension did not load: which Python it was built
    for (from the file names next to us) against the one running now."""
    import glob
    import importlib.machinery
    import os
    import platform
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    running = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(here, "_ferricorn*.so")))
    if not found:
        return ImportError(
            f"ferricorn's compiled extension (ferricorn._ferricorn) is not in {here}: "
            f"this is a source checkout that was never built, or a broken install. "
            f"Install a wheel (pip install ferricorn-*.whl) or build it (make build); "
            f"running {running}.",
            name="ferricorn._ferricorn",
        )
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    if any(name in {"_ferricorn" + suffix for suffix in suffixes} for name in found):
        return err  # built for this Python: the failure is something else
    built = []
    for name in found:
        # _ferricorn.cpython-311-x86_64-linux-gnu.so, _ferricorn.abi3.so
        tag = name.split(".")[1] if name.count(".") >= 2 else ""
        if tag == "abi3":
            built.append("CPython 3.10 or newer (abi3)")
        elif tag.startswith("cpython-") and tag[8:11].isdigit():
            digits = tag.split("-")[1]
            platform_tag = tag.split("-", 2)[2] if tag.count("-") >= 2 else "?"
            built.append(f"CPython {digits[0]}.{digits[1:]} ({platform_tag})")
        else:
            built.append(name)
    return ImportError(
        f"ferricorn's compiled extension was built for {', '.join(built)} "
        f"[{', '.join(found)} in {here}], but this is {running}: "
        f"{err}. Install ferricorn for this Python (pip install a wheel built for it, or the sdist; "
        f"in a clone: rm -rf .venv && make build PYTHON=<this python>).",
        name="ferricorn._ferricorn",
    )


try:
    from ferricorn._ferricorn import __version__
except ImportError as _err:
    _why = _extension_missing(_err)
    if _why is _err:
        raise
    raise _why from _err

SERVER = "ferricorn"
version_info = tuple(int(p) for p in __version__.split(".")[:3])

__all__ = ["SERVER", "__version__", "version_info"]

"""A PEP 517 build backend for the forkvm client, in the standard library only.

The client has no dependencies, and neither does building it: pip can install
it without downloading a build backend (setuptools, wheel, ...), which matters
on machines that reach no Python package index. It builds a pure-Python wheel
of the forkvm package, an sdist, and an editable wheel (PEP 660).
"""

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "forkvm"


def _project():
    """The [project] table of pyproject.toml (the fields this backend uses)."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        text = f.read().decode("utf-8")
    try:
        import tomllib  # Python 3.11+

        return tomllib.loads(text)["project"]
    except ImportError:
        section = text.split("[project]", 1)[1].split("\n[", 1)[0]
        fields = {}
        for key in ("name", "version", "description", "requires-python", "readme"):
            m = re.search(r'^%s\s*=\s*"([^"]*)"' % re.escape(key), section, re.M)
            if m:
                fields[key] = m.group(1)
        return fields


def _metadata():
    p = _project()
    lines = [
        "Metadata-Version: 2.1",
        "Name: %s" % p["name"],
        "Version: %s" % p["version"],
        "Summary: %s" % p.get("description", ""),
    ]
    if p.get("requires-python"):
        lines.append("Requires-Python: %s" % p["requires-python"])
    lic = p.get("license")
    if isinstance(lic, dict) and lic.get("text"):
        lines.append("License: %s" % lic["text"])
    readme = os.path.join(ROOT, p.get("readme", "README.md"))
    body = ""
    if os.path.exists(readme):
        lines.append("Description-Content-Type: text/markdown")
        with open(readme, encoding="utf-8") as f:
            body = f.read()
    return p["name"], p["version"], ("\n".join(lines) + "\n\n" + body).encode("utf-8")


def _package_files():
    base = os.path.join(ROOT, PACKAGE)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(dirpath, name)
            yield path, os.path.relpath(path, ROOT).replace(os.sep, "/")


def _digest(data):
    d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + d.decode("ascii")


def _write_wheel(wheel_directory, entries):
    """Writes a py3-none-any wheel of entries (archive path -> bytes)."""
    name, version, metadata = _metadata()
    dist_info = "%s-%s.dist-info" % (name, version)
    entries = dict(entries)
    entries[dist_info + "/METADATA"] = metadata
    entries[dist_info + "/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: forkvm-build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join("%s,%s,%d\n" % (path, _digest(data), len(data)) for path, data in entries.items())
    record += dist_info + "/RECORD,,\n"
    entries[dist_info + "/RECORD"] = record.encode("utf-8")

    filename = "%s-%s-py3-none-any.whl" % (name, version)
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in entries.items():
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    entries = {}
    for path, arcname in _package_files():
        with open(path, "rb") as f:
            entries[arcname] = f.read()
    return _write_wheel(wheel_directory, entries)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # A .pth file puts the source directory on sys.path.
    return _write_wheel(wheel_directory, {"_forkvm_editable.pth": (ROOT + "\n").encode("utf-8")})


def build_sdist(sdist_directory, config_settings=None):
    name, version, metadata = _metadata()
    base = "%s-%s" % (name, version)
    filename = base + ".tar.gz"
    files = ["pyproject.toml", "README.md", "_build/backend.py"]
    files += [arcname for _, arcname in _package_files()]
    tests = os.path.join(ROOT, "tests")
    if os.path.isdir(tests):
        files += ["tests/" + n for n in sorted(os.listdir(tests)) if n.endswith(".py")]
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for rel in files:
            path = os.path.join(ROOT, rel)
            if os.path.exists(path):
                tf.add(path, arcname=base + "/" + rel, recursive=False)
        info = tarfile.TarInfo(base + "/PKG-INFO")
        info.size, info.mtime, info.mode = len(metadata), int(time.time()), 0o644
        tf.addfile(info, io.BytesIO(metadata))
    return filename

"""Read-only file trees over folders, zips and rars, and the small parsing helpers every reader shares.

    from archives import open_tree
    tree = open_tree("data/raw/opensarship")        # a folder, a zip (nested zips too) or a rar
    for name in tree.names():                       # posix member names, sorted
        data = tree.read(name)                      # bytes
    sub = tree.open("OpenSARShip_2.zip")            # a member archive, as a tree of its own
    print(tree.describe(name))                      # "data/raw/opensarship/x.zip" or "outer.zip!x.zip"
    sub.close()

Members are never extracted next to the data: zips are read in memory, a rar is extracted into a private scratch
folder (inside the output's temporary folder) that goes when the tree is closed. An archive holding an absolute
or climbing member path (a zip-slip archive) is refused whole, before anything is read from it.

Inside a folder, a link whose target lies outside the folder (a file or a folder), and anything that is not a
regular file (a FIFO, a device, a socket), is refused: names() leaves it out, tree.refused holds it as
{name: (reason, detail)} (a folder's name ends in "/") for the readers to report as skipped, and read() refuses
it again at reading time. The folder itself may be a link (data/raw/fusar -> /big/disk/FUSAR-Ship); links inside
it must stay inside it, except a link to a whole archive file (a .zip or .rar scene or dataset archive, linked in
on purpose: the usual way to keep big downloads on another disk), whose members are checked like any archive's.

open_tree never stops a run on one bad download: an archive it cannot read (corrupt, truncated, not a regular
file) comes back as a BrokenTree with the reason, which the readers report as a skipped source, as they do for a
corrupt archive found inside a folder (open_member). A zip-slip archive, or a rar without an extraction tool,
still stops the run (DataError: the user must act).
"""

import io
import os
import re
import shutil
import stat
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np


class DataError(Exception):
    """A problem with the input data the user must fix; dataset_prep turns it into an error message, not a
    traceback."""


class BadArchiveError(DataError):
    """An archive that cannot be read (corrupt, truncated, not an archive)."""


class RefusedError(BadArchiveError, OSError):
    """An entry refused unread: a link leaving the input folder, or not a regular file (a FIFO would block the run
    forever, a device never ends). An OSError too, so that a chip refused at reading time is one skipped chip
    (READ_ERRORS), not a stopped run. `reason` is the short reason the summaries count."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason


# What reading or decoding one member can raise on a damaged file: a reader reports it as a skipped chip or
# scene with its reason, never as a traceback.
READ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, RuntimeError)

# ---------------------------------------------------------------------------------------------- shared helpers

# OpenSARShip's product folders inside a scene (docs/data-formats.md). The OpenSARShip reader finds scenes by
# them; the FUSAR-Ship reader ignores the images in them (Patch_RGB PNGs are not FUSAR chips).
OPENSARSHIP_FOLDERS = ("Patch", "Patch_Cal", "Patch_Uint8", "Patch_RGB")
# Sentinel-1 product name: MMM_BB_TTTR_LFPP_start_stop_orbit_datatake_crc, e.g.
# S1A_IW_GRDH_1SDV_20150823T221233_20150823T221258_007396_00A2CA_54D0 (SLC: S1A_IW_SLC__1SDV_...). Its first
# two fields alone (SCENE_START_RE) mark a file as a scene even when renamed or cut short.
_SCENE_START = r"(?P<mission>S1[A-D])_(?P<mode>[A-Z0-9]{2})_"
SCENE_START_RE = re.compile(_SCENE_START)
SCENE_RE = re.compile(
    _SCENE_START + r"(?P<type>[A-Z0-9_]{4})_(?P<level>\d)(?P<pclass>[A-Z])"
    r"(?P<npol>[SD])(?P<pol>[VH])_\d{8}T\d{6}_\d{8}T\d{6}_(?P<orbit>\d{6})_(?P<datatake>[0-9A-F]{6})_[0-9A-F]{4}")


def scene_name_of(text):
    """The Sentinel-1 product name inside `text` (a file or folder name), or None."""
    m = SCENE_RE.search(text)
    return m.group(0) if m else None


def is_archive(name):
    return name.lower().endswith((".zip", ".rar"))


def is_junk(name):
    """macOS resource forks and hidden files, which ride along in many re-zipped downloads."""
    return any(p.startswith(".") or p == "__MACOSX" for p in name.split("/"))


def is_under(name, folder):
    """`name` is `folder` or lies inside it ('' = the root holds everything)."""
    return folder == "" or name == folder or name.startswith(folder + "/")


def positive_number(text):
    """A positive finite number as text ('190', '32.26'), or '' for missing, zero, NaN."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return ""
    if not np.isfinite(v) or v <= 0:
        return ""
    return str(int(v)) if v == int(v) else f"{v:.10g}"


def valid_mmsi(text):
    """An MMSI as digits ('412000000' from '412000000', ' 412000000.0 ', 4.12e8), or '' when missing, zero,
    fractional or not a number (AIS fill values). One spelling for every dataset: the MMSI groups chips across
    datasets."""
    text = str(text or "").strip()
    try:
        v = float(text)
    except ValueError:
        return ""
    return str(int(v)) if np.isfinite(v) and v > 0 and v == int(v) else ""


def clean_error(error):
    """An exception's text without the in-memory buffer that decoder messages name ("<_io.BytesIO object at
    0x7f...>"), so the summaries of two identical runs are identical."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(error)) or type(error).__name__


# ---------------------------------------------------------------------------------------------- trees
# A tree exposes names(), read(name), open(name) (a member archive as a tree), describe(name) and close().


def check_member(name, label):
    """Refuse an archive member whose path is absolute or climbs out of its folder (zip-slip)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in norm.split("/"):
        raise DataError(f"refusing archive {label}: member {name!r} has an absolute path or climbs out of its "
                        "folder (a zip-slip archive); nothing was read from it. Check where it came from and "
                        "re-download it from the dataset's provider")
    return "/".join(p for p in norm.split("/") if p not in ("", "."))  # "./Patch/x.tif" -> "Patch/x.tif"


class Tree:
    """What every tree has: its label, the entries it refused ({name: (reason, detail)}, left out of names()), and
    the member archives that could not be opened (open_member), kept so that each is reported once, also when
    another reader opens the archive holding them again (`nested`: {member: its `broken`})."""

    def __init__(self, label):
        self.label = label
        self._refused = {}
        self.broken = {}
        self.nested = {}

    @property
    def refused(self):
        return self._refused


class BrokenTree(Tree):
    """An archive that could not be opened, standing in for its tree: it holds no names, and the first reader that
    claims it reports it as a skipped source (`reason`, `detail`), the others leave it alone."""

    def __init__(self, label, reason, detail):
        super().__init__(label)
        self.reason, self.detail = reason, detail
        self._claimed = False

    def claim(self):
        """True the first time only: the reader that gets True reports the archive."""
        first, self._claimed = not self._claimed, True
        return first

    def names(self):
        return []

    def read(self, name):
        raise BadArchiveError(self.detail)

    def open(self, name):
        raise BadArchiveError(self.detail)

    def describe(self, name):
        return f"{self.label}!{name}"

    def close(self):
        pass


def _linked_archive(name, target):
    """True for a link to a whole archive file (module docstring): read wherever it points."""
    return is_archive(name) and is_archive(target.name) and target.is_file()


def _not_regular(label):
    return ("not a regular file", f"{label} is not a regular file (a FIFO, device or socket): not read")


class DirTree(Tree):
    def __init__(self, path, label=None, scratch=None):
        super().__init__(label or str(path))
        self.path = Path(path)
        self.root = self.path.resolve()
        self.scratch = scratch
        self._names = None

    @property
    def refused(self):
        self.names()  # the listing finds them
        return self._refused

    def names(self):
        if self._names is None:
            try:
                self._names = sorted(self._scan(self.path, ""))
            except OSError as e:
                raise DataError(f"cannot list the folder {self.label}: {e}; check that it exists and that you may "
                                "read it") from e
        return self._names

    def _scan(self, folder, rel):
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                name = rel + entry.name
                if entry.is_symlink():
                    found += self._link(entry.path, name)
                elif entry.is_dir(follow_symlinks=False):
                    try:
                        found += self._scan(entry.path, name + "/")
                    except OSError as e:
                        self._refused[name + "/"] = ("unreadable folder", f"{self.describe(name)}: {e}")
                elif entry.is_file(follow_symlinks=False):
                    found.append(name)
                else:
                    self._refused[name] = _not_regular(self.describe(name))
        return found

    def _link(self, path, name):
        # A link inside the folder is read like the file it points to; one to a folder inside it is not followed
        # (its files are listed where they lie); one leaving the folder is refused, whatever it points to (a
        # folder's name is refused with a trailing "/", so that the readers tell folders from files).
        target = Path(os.path.realpath(path))
        if _linked_archive(name, target):
            return [name]
        if not target.is_relative_to(self.root):
            self._refused[name + "/" * target.is_dir()] = ("link leaving the input folder",
                                  f"{self.describe(name)} is a link to {target}, outside the input folder "
                                  f"{self.label}: not read (copy the file into the folder if it belongs to the data)")
        elif target.is_file():
            return [name]
        elif not target.is_dir():
            self._refused[name] = _not_regular(self.describe(name)) if target.exists() else (
                "broken link", f"{self.describe(name)} is a link to {target}, which does not exist")
        return []

    def _checked(self, name):
        """The real path of a member, checked again when it is read or opened (the folder may have changed since
        it was listed): refused when the listing refused it or when it now leads outside the folder."""
        if name in self.refused:
            raise RefusedError(*self.refused[name])
        real = Path(os.path.realpath(self.path / name))
        if not real.is_relative_to(self.root) and not _linked_archive(name, real):
            raise RefusedError("link leaving the input folder", f"{self.describe(name)} now points to {real}, "
                               f"outside the input folder {self.label}: not read")
        return real

    def read(self, name):
        # O_NONBLOCK: opening a FIFO put in place since the listing must not wait for a writer.
        fd = os.open(self._checked(name), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RefusedError(*_not_regular(self.describe(name)))
            return f.read()

    def open(self, name):
        return _open_path(self._checked(name), self.describe(name), self.scratch)

    def describe(self, name):
        return f"{self.label}/{name}"

    def close(self):
        pass


class ZipTree(Tree):
    def __init__(self, file, label, scratch=None):
        super().__init__(label)
        self.scratch = scratch
        try:
            self.zf = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise BadArchiveError(f"cannot read {label}: not a readable zip ({e}); a corrupt or incomplete "
                                  "download? Download it again") from e
        self._map = {}
        for info in self.zf.infolist():
            norm = check_member(info.filename, label)
            if not info.is_dir():
                self._map[norm] = info
        self._names = sorted(self._map)

    def names(self):
        return self._names

    def read(self, name):
        return self.zf.read(self._map[name])

    def open(self, name):
        try:
            data = self.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
            raise BadArchiveError(f"cannot read {self.describe(name)}: {e}") from e
        return tree_from_bytes(data, name, self.describe(name), self.scratch)

    def describe(self, name):
        return f"{self.label}!{name}"

    def close(self):
        self.zf.close()


# ---------------------------------------------------------------------------------------------- rar
RAR_TOOLS = ("unrar", "7z", "7zz", "bsdtar", "unar")
_RAR_LIST = {  # tool -> command listing the members of the archive {rar}
    "unrar": ["unrar", "lb", "-p-", "{rar}"],
    "7z": ["7z", "l", "-slt", "-p-", "{rar}"],
    "7zz": ["7zz", "l", "-slt", "-p-", "{rar}"],
    "bsdtar": ["bsdtar", "-tf", "{rar}"],
    "unar": ["lsar", "{rar}"],
}
_RAR_EXTRACT = {  # tool -> command extracting the archive {rar} into the folder {dest}
    "unrar": ["unrar", "x", "-o+", "-p-", "-idq", "{rar}", "{dest}/"],
    "7z": ["7z", "x", "-y", "-p-", "-o{dest}", "{rar}"],
    "7zz": ["7zz", "x", "-y", "-p-", "-o{dest}", "{rar}"],
    "bsdtar": ["bsdtar", "-xf", "{rar}", "-C", "{dest}"],
    "unar": ["unar", "-q", "-f", "-D", "-o", "{dest}", "{rar}"],
}


def rar_tool():
    """The first rar extraction tool on PATH, or 'rarfile' when only that package is importable."""
    for tool in RAR_TOOLS:
        if shutil.which(tool):
            return tool
    try:
        import rarfile  # noqa: F401 - optional; it still needs one of the tools above for compressed members
        return "rarfile"
    except ImportError:
        return None


def _no_rar_tool(label, detail=""):
    return DataError(f"cannot read {label}: .rar archives need an extraction tool and none was found{detail}. "
                     "Install one of: unrar (apt-get install unrar), unar, 7-Zip (apt-get install 7zip, "
                     "brew install sevenzip), or bsdtar (apt-get install libarchive-tools); or extract the rar "
                     "yourself and name the folder with the dataset's flag (e.g. --opensarship FOLDER)")


class RarTree(DirTree):
    """A rar listed with the first available tool, checked member by member, then extracted into a private
    scratch folder (inside the output's temporary folder) and read from there; the scratch folder goes on close.
    With only the rarfile package, members are read through it instead."""

    def __init__(self, path, label, scratch=None):
        tool = rar_tool()
        if tool is None:
            raise _no_rar_tool(label)
        self._rf = self._dest = None
        if tool == "rarfile":
            self._open_with_rarfile(path, label, scratch)
        else:
            self._extract_with(tool, path, label, scratch)

    def _open_with_rarfile(self, path, label, scratch):
        import rarfile
        try:
            self._rf = rarfile.RarFile(str(path))
            members = self._rf.namelist()
        except rarfile.Error as e:
            raise _no_rar_tool(label, f" (rarfile: {e})") from e
        for m in members:
            check_member(m, label)
        super().__init__(path, label, scratch)
        self._names = sorted(m.replace("\\", "/") for m in members if not m.endswith(("/", "\\")))
        self._orig = {m.replace("\\", "/"): m for m in members}

    def _extract_with(self, tool, path, label, scratch):
        out = _run([a.format(rar=path) for a in _RAR_LIST[tool]], label)
        if tool in ("7z", "7zz"):
            members = [line[7:] for line in out.splitlines() if line.startswith("Path = ")][1:]
        elif tool == "unar":
            members = out.splitlines()[1:]
        else:
            members = out.splitlines()
        for m in members:
            if m.strip():
                check_member(m.strip(), label)
        dest = Path(tempfile.mkdtemp(prefix="rar-", dir=scratch))
        _run([a.format(rar=path, dest=dest) for a in _RAR_EXTRACT[tool]], label)
        root = dest.resolve()
        for p in dest.rglob("*"):
            if p.is_symlink() or not p.resolve().is_relative_to(root):
                shutil.rmtree(dest, ignore_errors=True)
                raise DataError(f"refusing archive {label}: member {p.relative_to(dest)} is a link or lies "
                                "outside its folder")
        super().__init__(dest, label, scratch)
        self._dest = dest

    def read(self, name):
        if self._rf is not None:
            return self._rf.read(self._orig[name])
        return super().read(name)

    def open(self, name):
        return tree_from_bytes(self.read(name), name, self.describe(name), self.scratch)

    def describe(self, name):
        return f"{self.label}!{name}"

    def close(self):
        if self._rf is not None:
            self._rf.close()
        else:
            shutil.rmtree(self._dest, ignore_errors=True)


def _run(cmd, label):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise _no_rar_tool(label, f" ({cmd[0]}: {e})") from e
    if done.returncode != 0:
        raise BadArchiveError(f"cannot read {label}: {cmd[0]} failed ({done.stderr.strip()[:300]})")
    return done.stdout


# ---------------------------------------------------------------------------------------------- opening


def tree_from_bytes(data, name, label, scratch):
    """A member archive's bytes as a tree (a rar goes through a temporary file in `scratch`)."""
    if name.lower().endswith(".rar"):
        fd, tmp = tempfile.mkstemp(suffix=".rar", dir=scratch)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return RarTree(tmp, label, scratch)
    return ZipTree(io.BytesIO(data), label, scratch)


def _open_path(path, label, scratch):
    # A folder, zip or rar on disk as a tree; raises BadArchiveError (RefusedError) when it cannot be read.
    if path.is_dir():
        return DirTree(path, label, scratch)
    if not path.exists():
        raise DataError(f"{label}: no such file or folder")
    if not path.is_file():  # a FIFO would block zipfile forever, a device never ends
        raise RefusedError(*_not_regular(label))
    if path.suffix.lower() == ".rar":
        return RarTree(path, label, scratch)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return ZipTree(path, label, scratch)
    raise DataError(f"{label} is neither a folder, a zip nor a rar")  # a wrong path named, not a bad download


def _broken(label, error):
    return BrokenTree(label, getattr(error, "reason", "unreadable archive"), str(error))


def open_tree(path, label=None, scratch=None):
    """A folder, zip or rar on disk as a tree; a BrokenTree when it cannot be read (see the module docstring)."""
    path = Path(path)
    label = label or str(path)
    try:
        return _open_path(path, label, scratch)
    except BadArchiveError as e:
        return _broken(label, e)


def open_member(tree, name):
    """A member archive of `tree` as a tree of its own; a BrokenTree (the same one each time it is asked for, so
    that one reader reports it) when it is refused or cannot be read."""
    if name in tree.refused and name not in tree.broken:
        tree.broken[name] = BrokenTree(tree.describe(name), *tree.refused[name])
    if name in tree.broken:
        return tree.broken[name]
    try:
        sub = tree.open(name)
    except BadArchiveError as e:
        tree.broken[name] = _broken(tree.describe(name), e)
        return tree.broken[name]
    sub.broken = tree.nested.setdefault(name, sub.broken)
    return sub


def archive_names(tree):
    """The archives in `tree` a reader may open (open_member), refused ones included, so that it reports them."""
    return sorted(n for n in [*tree.names(), *tree.refused] if is_archive(n) and not is_junk(n))

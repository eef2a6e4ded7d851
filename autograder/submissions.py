"""Find the submitted notebooks in what an instructor hands the grader.

Accepted input, a folder or a .zip of one (a single wrapping folder in the zip
is looked through)::

    1. nbgrader             INPUT/<student>/<assignment>/<notebook>.ipynb
    2. per-student folders  INPUT/<student folder>/<notebook>.ipynb     (Moodle "download all")
    3. flat files           INPUT/<student prefix>_<notebook>.ipynb       (Canvas, Moodle)

The layout is decided from what is found, in that order. Layouts 2 and 3 do
not name the assignment, so there must be exactly one candidate.

File names are matched to the assignment's notebooks case-insensitively and
through the decorations that copies acquire ("Copy of 1_numpy", "1_numpy (1)",
"1_numpy-1", "1_numpy - Copy"). Student folder names and file-name prefixes of
Moodle ("Ada Lovelace_1234567_assignsubmission_file_") and Canvas
("lovelaceada_LATE_12345_67890_") are recognised so that the LMS user id ends
up in the student id; :func:`write_student_map` records who is who.

Everything here only reads names: notebooks are opened by the grader.
"""
from __future__ import annotations

import io
import re
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .spreadsheet import write_rows

__all__ = ["GradingInputError", "Submission", "StudentEntry", "Discovery", "discover",
           "write_student_map", "sanitize_student_ids", "match_notebook", "split_flat_name",
           "undecorated_variants", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES"]

NBGRADER, PER_STUDENT, FLAT = "nbgrader", "per-student folders", "flat files"

# A notebook larger than this is not homework; a zip expanding past the total
# is more likely a zip bomb than a class. Read at call time so tests can lower them.
MAX_MEMBER_BYTES = 200 * 1024 ** 2
MAX_TOTAL_BYTES = 2 * 1024 ** 3

# Long ids make output paths exceed the 255-byte limit of common file systems.
MAX_ID_LENGTH = 100

# Zip records read directly where zipfile gives up (see _open_zip), as the zip
# specification lays them out: signature, fields, then the variable-length parts.
UTF8_FLAG = 0x800                                       # general purpose bit 11: the name is UTF-8
_END_RECORD = struct.Struct("<4s4H2LH")                 # end of central directory
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_END_RECORD = struct.Struct("<4sQ2H2L4Q")
_DIRECTORY_ENTRY = struct.Struct("<4s4B4HL2L5H2L")      # then name, extra field, comment
_FLAGS_HIGH_BYTE = 9                                    # the flags follow signature and versions

NOTEBOOK_SUFFIX = ".ipynb"
SEPARATORS = "_- "
IGNORED_NAMES = frozenset({"__MACOSX", ".ipynb_checkpoints"})
NAMES_SHOWN = 5  # file names quoted in one message before "and N more"

# Decorations that copies of a notebook acquire, stripped one at a time.
_TRAILING_DECORATIONS = (
    re.compile(r"\s*\(\d+\)$"),                             # "x (1)": browsers, Drive
    re.compile(r"-\d+$"),                                   # "x-1": Canvas re-uploads
    re.compile(r"(?:\s+-)?\s+copy(?:\s+\d+)?$", re.I),      # "x copy", "x - Copy": macOS, Windows
)
_LEADING_COPY_OF = re.compile(r"^copy[\s_]+of[\s_]+", re.I)   # "Copy of x": Google Drive, Colab
_TRAILING_COPY_OF = re.compile(r"(?:^|[\s_-])copy[\s_]+of$", re.I)  # the same after a flat prefix

_MOODLE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assignsubmission_[a-z]+_?$", re.I)
_CANVAS = re.compile(r"^(?P<name>.+?)_(?:late_)?(?P<id>\d+)_(?P<attachment>\d+)_?$", re.I)


class GradingInputError(ValueError):
    """A problem with the grader's input that the user can fix (the CLI shows the message, exit 2)."""


@dataclass(frozen=True)
class Submission:
    student: str            # safe student id used in grades.csv and output paths
    assignment: str
    notebook: str           # canonical notebook name, e.g. "1_numpy"
    path: Optional[Path]    # the file to grade; None when the student did not submit this notebook
    source: str             # where it came from, relative to the input (for the mapping file), "" if missing


@dataclass(frozen=True)
class StudentEntry:
    student: str        # the id used in grades.csv
    original: str       # the folder name or file-name prefix it came from
    lms_name: str       # e.g. "Ada Lovelace" when recognised, else ""
    lms_id: str         # e.g. "1234567" when recognised, else ""


@dataclass
class Discovery:
    submissions: list[Submission]
    students: list[StudentEntry]
    warnings: list[str]
    layout: str


# ----------------------------------------------------------------------------- public API


def discover(input_path, notebooks_by_assignment: dict[str, list[str]],
             assignments: Optional[Sequence[str]] = None,
             workdir: Optional[Path] = None) -> Discovery:
    """Find every student's notebooks of the chosen assignments in ``input_path``.

    ``input_path`` is a folder or a .zip (extracted into a new folder under
    ``workdir``). ``assignments`` limits the result; by default every known
    assignment found. Raises :class:`GradingInputError` saying what to do when
    the input holds nothing to grade.
    """
    input_path = Path(input_path)
    notebooks_by_assignment = _usable_assignments(notebooks_by_assignment)
    known = sorted(notebooks_by_assignment)
    requested = _check_requested(assignments, known)
    warnings: list[str] = []

    source_root, from_zip = _open_input(input_path, workdir, warnings)
    root = _unwrap_single_folder(source_root, notebooks_by_assignment) if from_zip else source_root
    context = _Context(input_path, root, source_root, notebooks_by_assignment, warnings)

    layout = _detect_layout(context)
    if layout == NBGRADER:
        scan = _scan_nbgrader(context, requested)
    else:
        assignment = _single_assignment(requested, known, layout, input_path)
        scan_layout = _scan_student_folders if layout == PER_STUDENT else _scan_flat_files
        scan = scan_layout(context, assignment)
    if not scan.candidates:
        raise _nothing_to_grade(context, scan.why_nothing)
    return _assemble(scan, layout + (" (zip)" if from_zip else ""), context)


def write_student_map(discovery: Discovery, path: Path) -> None:
    """Write who is who: student,original,lms_name,lms_id,files (files: ';'-joined sources)."""
    files: dict[str, list[str]] = {}
    for submission in discovery.submissions:
        if submission.path is not None:
            files.setdefault(submission.student, []).append(submission.source)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rows(path, ["student", "original", "lms_name", "lms_id", "files"],
               ([entry.student, entry.original, entry.lms_name, entry.lms_id,
                 ";".join(files.get(entry.student, []))] for entry in discovery.students))


def sanitize_student_ids(names: Iterable[str]) -> dict[str, str]:
    """Map names to ids safe in file paths, command lines and CSV files.

    Accents are folded ("Müller" -> "Muller") so ids stay readable; other
    characters than letters, digits, '_', '-' and '.' become '_'. Ids are
    unique ignoring case, because output folders named "Ada" and "ada" are one
    folder on macOS and Windows; clashes get "_2", "_3" in sorted order.
    """
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for name in sorted(set(names)):
        base = _safe_id(name)
        candidate, n = base, 2
        while candidate.casefold() in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate.casefold())
        ids[name] = candidate
    return ids


def _safe_id(name: str) -> str:
    folded = unicodedata.normalize("NFKD", name)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", folded)
    # A leading '.' hides the folder, a leading '-' reads as a command-line
    # option; a trailing '.' is dropped by Windows.
    return safe[:MAX_ID_LENGTH].strip("._-") or "student"


# ----------------------------------------------------------------------------- names


def undecorated_variants(stem: str) -> list[str]:
    """``stem``, then what remains after stripping each copy decoration in turn.

    The undecorated name is tried first, so a notebook that really is named
    like a decorated one ("part-2") still matches itself.
    """
    variants = [stem.strip()]
    while True:
        current = variants[-1]
        for pattern in (*_TRAILING_DECORATIONS, _LEADING_COPY_OF):
            stripped = pattern.sub("", current, count=1).strip()
            if stripped and stripped != current:
                variants.append(stripped)
                break
        else:
            return variants


def match_notebook(file_name: str, notebooks: Sequence[str]) -> Optional[tuple[str, bool]]:
    """``(notebook, decorated)`` when ``file_name`` is a notebook's file, else None."""
    by_folded = {n.casefold(): n for n in notebooks}
    for depth, variant in enumerate(undecorated_variants(_stem(file_name))):
        if variant.casefold() in by_folded:
            return by_folded[variant.casefold()], depth > 0
    return None


def split_flat_name(file_name: str, notebooks: Sequence[str]) -> Optional[tuple[str, str, bool]]:
    """``(student prefix, notebook, decorated)`` of a flat export's file name, else None.

    The name must end with a notebook name after a separator; the longest
    notebook name wins, so "a_x_y" is notebook "x_y" when both "y" and "x_y" exist.
    The prefix is "" for a bare notebook name, whose student is unknown.
    """
    longest_first = sorted(notebooks, key=len, reverse=True)
    for depth, variant in enumerate(undecorated_variants(_stem(file_name))):
        for notebook in longest_first:
            head, tail = variant[:-len(notebook)], variant[-len(notebook):]
            if tail.casefold() == notebook.casefold() and (not head or head[-1] in SEPARATORS):
                prefix = head.rstrip(SEPARATORS)
                without_copy_of = _TRAILING_COPY_OF.sub("", prefix).rstrip(SEPARATORS)
                return without_copy_of, notebook, depth > 0 or without_copy_of != prefix
    return None


@dataclass(frozen=True)
class _Owner:
    """Who a folder or file-name prefix belongs to, before ids are made safe."""

    key: str            # equal keys are one student; becomes the id after sanitising
    lms: str = ""       # "Moodle", "Canvas" or "" when not recognised
    lms_name: str = ""
    lms_id: str = ""


def _identify_student(raw: str, canvas: bool) -> _Owner:
    """Recognise Moodle (and, for flat files, Canvas) names in a folder name or prefix.

    Canvas is only tried on flat-file prefixes: its pattern ("name_<digits>_<digits>")
    would merge nbgrader folders such as "group_2024_01" and "group_2024_02".
    """
    moodle = _MOODLE.match(raw)
    if moodle:
        name = moodle["name"].strip()
        return _Owner(f"{name}_{moodle['id']}", "Moodle", name, moodle["id"])
    canvas_match = _CANVAS.match(raw) if canvas else None
    if canvas_match:
        # The attachment id differs per file: leaving it out makes the files of
        # one student one student.
        name = canvas_match["name"]
        return _Owner(f"{name}_{canvas_match['id']}", "Canvas", name, canvas_match["id"])
    return _Owner(raw)


def _stem(file_name: str) -> str:
    return file_name[:-len(NOTEBOOK_SUFFIX)] if _is_notebook_name(file_name) else file_name


def _is_notebook_name(file_name: str) -> bool:
    return file_name.lower().endswith(NOTEBOOK_SUFFIX)


def _natural_key(text: str) -> list:
    """Sort "x-10" after "x-9": the latest Canvas re-upload sorts last."""
    return [int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", text)]


def _printable(text: str) -> str:
    """``text`` with unprintable characters escaped.

    Warnings quote names from zips and folders, which may hold terminal control
    sequences, or undecodable bytes that would stop ``print``.
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode()
                   for c in text)


def _names(names: Sequence[str], quote=repr) -> str:
    shown = ", ".join(quote(n) for n in names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


# ----------------------------------------------------------------------------- input


def _usable_assignments(notebooks_by_assignment: dict[str, list[str]]) -> dict[str, list[str]]:
    """The assignments that have notebooks, each with its sorted notebook names."""
    usable = {a: sorted(set(notebooks)) for a, notebooks in notebooks_by_assignment.items()
              if notebooks}
    if not usable:
        raise GradingInputError("no assignment with notebooks to grade against: "
                                "check that the solutions folder holds the assignments' notebooks.")
    return usable


def _check_requested(assignments: Optional[Sequence[str]], known: list[str]) -> Optional[list[str]]:
    if not assignments:
        return None
    requested = list(dict.fromkeys(assignments))
    unknown = [a for a in requested if a not in known]
    if unknown:
        raise GradingInputError(f"unknown assignment {', '.join(unknown)}. "
                                f"Known assignments: {', '.join(known)}.")
    return requested


def _single_assignment(requested: Optional[list[str]], known: list[str], layout: str,
                       input_path: Path) -> str:
    """The assignment of a layout whose paths do not name it."""
    if requested and len(requested) == 1:
        return requested[0]
    if not requested and len(known) == 1:
        return known[0]
    choice = "several were given" if requested else f"there are {len(known)} known assignments"
    raise GradingInputError(
        f"{input_path} holds {layout}, which do not say which assignment they belong to, "
        f"and {choice}. Grade one assignment at a time: add --assignment A with one of "
        f"{', '.join(requested or known)}.")


def _open_input(input_path: Path, workdir: Optional[Path],
                warnings: list[str]) -> tuple[Path, bool]:
    """The folder to search and whether it came from a zip."""
    if input_path.is_dir():
        return input_path, False
    if not input_path.exists():
        raise GradingInputError(f"{input_path} does not exist. Give the folder of submissions "
                                f"or the .zip downloaded from the LMS.")
    if not zipfile.is_zipfile(input_path):
        if input_path.suffix.lower() == ".zip":
            raise GradingInputError(f"{input_path} is not a readable zip file (an incomplete "
                                    f"download?). Download it again, or unzip it yourself and "
                                    f"give the folder.")
        raise GradingInputError(f"{input_path} is neither a folder nor a .zip file. Give the "
                                f"folder of submissions or the .zip downloaded from the LMS.")
    if workdir is None:
        raise GradingInputError(f"{input_path} is a zip and no work folder was given to extract "
                                f"it into. Unzip it yourself and give the folder.")
    return _extract_zip(input_path, Path(workdir), warnings), True


def _is_ignored(name: str) -> bool:
    # Hidden files include .DS_Store, ._* AppleDouble files and .ipynb_checkpoints.
    return name.startswith(".") or name in IGNORED_NAMES


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not _is_ignored(p.name)),
                  key=lambda p: _natural_key(p.name))


def _visible_dirs(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir()]


def _notebook_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and _is_notebook_name(p.name)]


# ----------------------------------------------------------------------------- zip


def _extract_zip(zip_path: Path, workdir: Path, warnings: list[str]) -> Path:
    """Extract the safe members of ``zip_path`` into a new folder under ``workdir``.

    A new folder each time, so files of an earlier run never mix in. zipfile's
    own extract() would rewrite dangerous names instead of refusing them, and
    has no size limits.
    """
    try:
        with _open_zip(zip_path) as (archive, not_utf8):
            members = _members_to_extract(archive, not_utf8, zip_path, warnings)
            workdir.mkdir(parents=True, exist_ok=True)
            dest = Path(tempfile.mkdtemp(prefix="unzipped-", dir=workdir))
            total = 0
            for info, parts in members:
                total += _extract_member(archive, info, dest.joinpath(*parts), zip_path,
                                         MAX_TOTAL_BYTES - total, warnings)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise GradingInputError(f"{zip_path} is damaged ({err}). Download it again, or unzip "
                                f"it with another tool and give the folder.") from None
    return dest


@contextmanager
def _open_zip(zip_path: Path):
    """The open archive, and ``{position in the directory: raw name}`` of the members
    whose name is marked as UTF-8 but is not.

    zipfile refuses a whole archive over one such name, so one member would stop
    the grading of a class. Read with those names' mark cleared, the archive
    opens, and the caller skips and reports them.
    """
    with open(zip_path, "rb") as raw:
        try:
            archive, not_utf8 = zipfile.ZipFile(raw), {}
        except UnicodeDecodeError:
            not_utf8, unmarked = _names_marked_utf8_wrongly(raw)
            try:
                archive = zipfile.ZipFile(io.BufferedReader(_PatchedFile(raw, unmarked)))
            except UnicodeDecodeError as err:
                raise GradingInputError(f"{zip_path} has a file name that cannot be read "
                                        f"({err}). Unzip it with another tool and give the "
                                        f"folder.") from None
        with archive:
            yield archive, not_utf8


def _names_marked_utf8_wrongly(raw) -> tuple[dict[int, bytes], dict[int, int]]:
    """Find the directory entries marked UTF-8 whose name is not.

    Returns ``{position: raw name}`` and ``{file offset: byte}``, the bytes that
    clear their mark (the high byte of the entry's flags).
    """
    start, directory = _central_directory(raw)
    not_utf8, unmarked = {}, {}
    offset, position = 0, 0
    while offset < len(directory):
        if offset + _DIRECTORY_ENTRY.size > len(directory):
            raise zipfile.BadZipFile("truncated central directory")
        entry = _DIRECTORY_ENTRY.unpack_from(directory, offset)
        if entry[0] != b"PK\x01\x02":
            raise zipfile.BadZipFile("bad magic number for central directory")
        flags, name_length, extra_length, comment_length = entry[5], *entry[12:15]
        name_at = offset + _DIRECTORY_ENTRY.size
        name = directory[name_at:name_at + name_length]
        if flags & UTF8_FLAG and not _is_utf8(name):
            not_utf8[position] = name
            high_byte = offset + _FLAGS_HIGH_BYTE
            unmarked[start + high_byte] = directory[high_byte] & ~(UTF8_FLAG >> 8)
        offset += _DIRECTORY_ENTRY.size + name_length + extra_length + comment_length
        position += 1
    return not_utf8, unmarked


def _central_directory(raw) -> tuple[int, bytes]:
    """``(file offset, bytes)`` of the zip's central directory, located as zipfile locates it."""
    raw.seek(0, io.SEEK_END)
    tail_start = max(0, raw.tell() - _END_RECORD.size - 0xFFFF)  # the record, then a comment
    raw.seek(tail_start)
    tail = raw.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _END_RECORD.size:
        raise zipfile.BadZipFile("no end of central directory")
    end = tail_start + at
    size = _END_RECORD.unpack_from(tail, at)[5]
    if end >= _ZIP64_LOCATOR.size + _ZIP64_END_RECORD.size:
        raw.seek(end - _ZIP64_LOCATOR.size - _ZIP64_END_RECORD.size)
        record = raw.read(_ZIP64_END_RECORD.size + _ZIP64_LOCATOR.size)
        if record[-_ZIP64_LOCATOR.size:][:4] == b"PK\x06\x07" and record[:4] == b"PK\x06\x06":
            end -= _ZIP64_LOCATOR.size + _ZIP64_END_RECORD.size
            size = _ZIP64_END_RECORD.unpack_from(record)[8]
    # Counted back from its end, as zipfile does: a zip may follow other data.
    if end - size < 0:
        raise zipfile.BadZipFile("bad offset for central directory")
    raw.seek(end - size)
    return end - size, raw.read(size)


def _is_utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _PatchedFile(io.RawIOBase):
    """A file read with a few bytes replaced (``{offset: byte}``), without copying it."""

    def __init__(self, raw, replaced: dict[int, int]):
        super().__init__()
        self._raw, self._replaced = raw, replaced

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, buffer) -> int:
        start = self._raw.tell()
        count = self._raw.readinto(buffer)
        for offset, byte in self._replaced.items():
            if start <= offset < start + count:
                buffer[offset - start] = byte
        return count


def _members_to_extract(archive: zipfile.ZipFile, not_utf8: dict[int, bytes], zip_path: Path,
                        warnings: list[str]):
    """``(ZipInfo, path parts)`` of the members worth extracting; warns about refused ones."""
    unsafe, files, links, too_big, members = [], [], [], [], []
    for position, info in enumerate(archive.infolist()):
        if position in not_utf8:
            continue
        parts = _member_parts(info.filename)
        if parts is None:
            unsafe.append(info.filename)
        elif not (info.is_dir() or not parts or any(_is_ignored(p) for p in parts)):
            files.append((info, parts))
    for info, parts in _without_repeated_paths(files, zip_path, warnings):
        if _is_symlink(info):
            links.append(info.filename)
        elif info.file_size > MAX_MEMBER_BYTES:
            too_big.append(info.filename)
        else:
            members.append((info, parts))
    if not_utf8:
        shown = [f"'{name.decode('utf-8', 'backslashreplace')}'" for name in not_utf8.values()]
        warnings.append(f"{zip_path.name}: skipped {len(shown)} member(s) whose name is marked "
                        f"as UTF-8 but is not (the tool that made the zip is at fault): "
                        f"{_names(shown, quote=str)}; unzip it with another tool and give the "
                        f"folder to grade them")
    if unsafe:
        warnings.append(f"{zip_path.name}: skipped {len(unsafe)} member(s) with an absolute path "
                        f"or '..' that would be written outside the extraction folder: "
                        f"{_names(unsafe)}")
    if links:
        warnings.append(f"{zip_path.name}: skipped {len(links)} symbolic link(s): {_names(links)}")
    if too_big:
        warnings.append(f"{zip_path.name}: skipped {len(too_big)} file(s) larger than "
                        f"{_megabytes(MAX_MEMBER_BYTES)}: {_names(too_big)}; if one is a "
                        f"submission, shrink it (clear its outputs) and grade it separately")
    declared = sum(info.file_size for info, _ in members)
    if declared > MAX_TOTAL_BYTES:
        raise GradingInputError(f"{zip_path} would expand to {_megabytes(declared)}, more than "
                                f"the {_megabytes(MAX_TOTAL_BYTES)} limit. Unzip it yourself "
                                f"(check it is what you expect) and give the folder.")
    return members


def _without_repeated_paths(files: list, zip_path: Path, warnings: list[str]) -> list:
    """The ``(ZipInfo, parts)`` whose path no other member has; warns about the rest.

    Extracted, a later copy would replace an earlier one without a word, and
    zip tools disagree on which copy wins: the copy the student meant (or the
    one a teaching assistant opened) cannot be known, so no copy is graded.
    Paths differing only in case or Unicode normalisation are one file on
    macOS and Windows, so they count as the same path everywhere.
    """
    by_path: dict[tuple, list] = {}
    for info, parts in files:
        by_path.setdefault(_same_file(parts), []).append((info, parts))
    repeated = [copies for copies in by_path.values() if len(copies) > 1]
    if repeated:
        shown = [_copies_shown(copies) for copies in repeated]
        warnings.append(f"{zip_path.name}: skipped every copy of {len(repeated)} file(s) stored "
                        f"more than once (which copy was meant cannot be known; ask the student "
                        f"for the file): {_names(shown, quote=str)}")
    return [copies[0] for copies in by_path.values() if len(copies) == 1]


def _copies_shown(copies: list) -> str:
    """E.g. "'bob/1_numpy.ipynb' = 'bob\\\\1_numpy.ipynb' (2 copies)"."""
    names = dict.fromkeys(info.filename for info, _ in copies)
    return " = ".join(repr(name) for name in names) + f" ({len(copies)} copies)"


def _same_file(parts: list[str]) -> tuple:
    return tuple(unicodedata.normalize("NFC", part).casefold() for part in parts)


def _member_parts(name: str) -> Optional[list[str]]:
    """The path components of a member name; None when it could escape the destination."""
    name = name.replace("\\", "/")  # some Windows tools write backslashes
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    unix_mode = info.external_attr >> 16
    return (unix_mode & 0o170000) == 0o120000


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path,
                    zip_path: Path, budget: int, warnings: list[str]) -> int:
    """Copy one member to ``target``; return the bytes written.

    The declared size was checked already, but it is written by whoever made
    the zip: stop as soon as more bytes come out than it declared.
    """
    limit = min(info.file_size, MAX_MEMBER_BYTES, budget)
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, open(target, "wb") as out:
            while chunk := source.read(1024 * 1024):
                written += len(chunk)
                if written > limit:
                    break
                out.write(chunk)
    except (NotImplementedError, RuntimeError) as err:  # unsupported compression, encryption
        raise GradingInputError(f"cannot extract {info.filename!r} from {zip_path} ({err}). "
                                f"Unzip it with another tool and give the folder.") from None
    except OSError as err:  # e.g. a name too long for this file system, a file/folder clash
        warnings.append(f"{zip_path.name}: could not extract {info.filename!r} ({err}); skipped")
        return 0
    if written > limit:
        target.unlink(missing_ok=True)
        raise GradingInputError(f"{info.filename!r} in {zip_path} expands beyond its declared "
                                f"size or the size limits: the zip is damaged or malicious. "
                                f"Check where it came from.")
    return written


def _megabytes(n: int) -> str:
    return f"{n / 1024 ** 2:.0f} MB" if n >= 1024 ** 2 else f"{n} bytes"


def _unwrap_single_folder(root: Path, notebooks_by_assignment: dict[str, list[str]]) -> Path:
    """Look through the one folder that zips made by "compress folder" wrap everything in.

    Not when that folder is itself the only student: one with assignment
    folders (nbgrader) or holding notebooks under their plain names.
    """
    entries = _visible(root)
    if len(entries) != 1 or not entries[0].is_dir():
        return root
    only = entries[0]
    if any((only / a).is_dir() for a in notebooks_by_assignment):
        return root
    if _visible_dirs(only):
        return only
    all_notebooks = [n for names in notebooks_by_assignment.values() for n in names]
    files = _notebook_files(only)
    if files and all(match_notebook(f.name, all_notebooks) for f in files):
        return root
    return only


# ----------------------------------------------------------------------------- layouts


@dataclass
class _Context:
    input_path: Path        # as the user gave it, for messages
    root: Path              # where the layout starts (inside the zip's wrapping folder)
    source_root: Path       # what sources are relative to (the zip's top)
    notebooks_by_assignment: dict[str, list[str]]
    warnings: list[str]

    def source(self, path: Path) -> str:
        return path.relative_to(self.source_root).as_posix()


@dataclass(frozen=True)
class _Candidate:
    owner: str          # _Owner.key
    assignment: str
    notebook: str
    path: Path
    source: str
    decorated: bool     # the name needed copy decorations stripped


@dataclass
class _Scan:
    assignments: list[str]
    owners: dict[str, _Owner] = field(default_factory=dict)
    originals: dict[str, list[str]] = field(default_factory=dict)  # key -> folder names/prefixes
    candidates: list[_Candidate] = field(default_factory=list)
    from_folders: bool = True
    why_nothing: str = ""   # what was found, when no candidate was

    def add_owner(self, owner: _Owner, original: str) -> None:
        self.owners.setdefault(owner.key, owner)
        self.originals.setdefault(owner.key, []).append(original)


def _detect_layout(context: _Context) -> str:
    root, known = context.root, context.notebooks_by_assignment
    folders = _visible_dirs(root)
    if any((d / a).is_dir() for d in folders for a in known):
        return NBGRADER
    top_assignments = [d.name for d in folders if d.name in known]
    if top_assignments:
        raise GradingInputError(
            f"{context.input_path} holds the assignment folder {top_assignments[0]!r} at the "
            f"top; expected one folder per student above the assignment folders "
            f"(INPUT/<student>/{top_assignments[0]}/<notebook>.ipynb). If this is one "
            f"student's folder, give the folder that holds all the student folders.")
    if any(_notebook_files(d) for d in folders):
        return PER_STUDENT
    if _notebook_files(root):
        return FLAT
    raise _nothing_to_grade(context, "")


def _scan_nbgrader(context: _Context, requested: Optional[list[str]]) -> _Scan:
    known = context.notebooks_by_assignment
    students = _visible_dirs(context.root)
    found = sorted({d.name for s in students for d in _visible_dirs(s)} & set(known))
    chosen = requested or found
    absent = [a for a in chosen if a not in found]
    if chosen and absent == chosen:
        raise GradingInputError(
            f"no student folder in {context.input_path} has a folder {' or '.join(absent)}; "
            f"found {', '.join(found)}. Choose one of those with --assignment, or check the "
            f"input (expected INPUT/<student>/{absent[0]}/<notebook>.ipynb).")
    if absent:
        context.warnings.append(f"no student submitted {', '.join(absent)}: "
                                f"every notebook of it is missing")
    _warn_loose_notebooks(context, context.root, "the top of the input")
    scan = _Scan(chosen)
    for folder in students:
        owner = _identify_student(folder.name, canvas=False)
        scan.add_owner(owner, folder.name)
        stray = [d.name for d in _visible_dirs(folder) if d.name not in known]
        if stray:
            context.warnings.append(f"{folder.name}: ignored folder(s) {', '.join(stray)} "
                                    f"(not an assignment; known: {', '.join(sorted(known))})")
        _warn_loose_notebooks(context, folder, f"{folder.name}/")
        for assignment in chosen:
            if (folder / assignment).is_dir():
                _match_files(context, scan, owner, assignment, folder / assignment)
    if not scan.candidates:
        scan.why_nothing = (f"student folders, but their {' and '.join(chosen)} folders hold no "
                            f"notebook named after a notebook of the assignment")
    return scan


def _warn_loose_notebooks(context: _Context, folder: Path, where: str) -> None:
    loose = [p.name for p in _notebook_files(folder)]
    if loose:
        context.warnings.append(f"ignored {len(loose)} notebook(s) at {where}: {_names(loose)}; "
                                f"in this layout notebooks sit in <student>/<assignment>/")


def _scan_student_folders(context: _Context, assignment: str) -> _Scan:
    scan = _Scan([assignment])
    _warn_loose_notebooks_flat(context)
    empty = []
    for folder in _visible_dirs(context.root):
        owner = _identify_student(folder.name, canvas=False)
        if not _notebook_files(folder):
            empty.append((owner.key, folder.name))
            continue
        scan.add_owner(owner, folder.name)
        if _visible_dirs(folder):
            context.warnings.append(f"{folder.name}: ignored the folder(s) inside it "
                                    f"({', '.join(d.name for d in _visible_dirs(folder))}); "
                                    f"notebooks must sit directly in the student folder")
        _match_files(context, scan, owner, assignment, folder)
    if not scan.candidates:
        expected = _expected(context.notebooks_by_assignment[assignment])
        scan.why_nothing = (f"student folders, but no notebook in them is named after a notebook "
                            f"of {assignment} ({expected})")
    # Moodle makes one folder per submission type: a student's "onlinetext"
    # folder without notebooks is not a missing student.
    skipped = [name for key, name in empty if key not in scan.owners]
    if skipped:
        context.warnings.append(f"ignored {len(skipped)} folder(s) without a notebook: "
                                f"{_names(skipped)}")
    return scan


def _warn_loose_notebooks_flat(context: _Context) -> None:
    loose = [p.name for p in _notebook_files(context.root)]
    if loose:
        context.warnings.append(f"ignored {len(loose)} notebook(s) beside the student folders: "
                                f"{_names(loose)}; each student's notebooks sit in their folder")


def _match_files(context: _Context, scan: _Scan, owner: _Owner, assignment: str,
                 folder: Path) -> None:
    """Add the notebooks of ``folder`` named after a notebook of ``assignment``."""
    notebooks = context.notebooks_by_assignment[assignment]
    for path in _notebook_files(folder):
        match = match_notebook(path.name, notebooks)
        if match is None:
            context.warnings.append(f"{context.source(path)}: not a notebook of {assignment}, "
                                    f"skipped (expected {_expected(notebooks)})")
            continue
        notebook, decorated = match
        scan.candidates.append(_Candidate(owner.key, assignment, notebook, path,
                                          context.source(path), decorated))


def _expected(notebooks: Sequence[str]) -> str:
    return ", ".join(f"{n}{NOTEBOOK_SUFFIX}" for n in sorted(notebooks))


def _scan_flat_files(context: _Context, assignment: str) -> _Scan:
    notebooks = context.notebooks_by_assignment[assignment]
    scan = _Scan([assignment], from_folders=False)
    others, unmatched = [], []
    for path in _visible(context.root):
        if not path.is_file():
            continue
        if not _is_notebook_name(path.name):
            others.append(path.name)
            continue
        split = split_flat_name(path.name, notebooks)
        if split is None:
            unmatched.append(path.name)
            context.warnings.append(
                f"{context.source(path)}: does not end with a notebook name of {assignment}, "
                f"skipped (expected <student>_{_expected(notebooks)})")
            continue
        prefix, notebook, decorated = split
        if not prefix:
            context.warnings.append(f"{context.source(path)}: no student name before the "
                                    f"notebook name, skipped (expected <student>_{path.name})")
            continue
        owner = _identify_student(prefix, canvas=True)
        scan.add_owner(owner, prefix)
        scan.candidates.append(_Candidate(owner.key, assignment, notebook, path,
                                          context.source(path), decorated))
    if others:
        context.warnings.append(f"ignored {len(others)} file(s) that are not notebooks: "
                                f"{_names(others)}")
    if unmatched and not scan.candidates:
        scan.why_nothing = (f"{len(unmatched)} notebook(s) at the top, none named "
                            f"<student>_<notebook>.ipynb for {assignment}, e.g. {unmatched[0]!r}")
    return scan


# ----------------------------------------------------------------------------- result


def _assemble(scan: _Scan, layout: str, context: _Context) -> Discovery:
    ids = sanitize_student_ids(scan.owners)
    if scan.from_folders:
        _warn_changed_ids(scan, ids, context.warnings)

    chosen: dict[tuple[str, str, str], _Candidate] = {}
    by_slot: dict[tuple[str, str, str], list[_Candidate]] = {}
    for candidate in scan.candidates:
        slot = (ids[candidate.owner], candidate.assignment, candidate.notebook)
        by_slot.setdefault(slot, []).append(candidate)
    for slot, candidates in by_slot.items():
        chosen[slot] = _choose_duplicate(slot, candidates, context.warnings)

    submissions = []
    for key in scan.owners:
        for assignment in scan.assignments:
            for notebook in sorted(set(context.notebooks_by_assignment[assignment])):
                slot = (ids[key], assignment, notebook)
                found = chosen.get(slot)
                submissions.append(Submission(ids[key], assignment, notebook,
                                              found.path if found else None,
                                              found.source if found else ""))
    submissions.sort(key=lambda s: (s.student.casefold(), s.student, s.assignment, s.notebook))

    students = [StudentEntry(ids[key], min(scan.originals[key], key=_natural_key),
                             owner.lms_name, owner.lms_id)
                for key, owner in scan.owners.items()]
    students.sort(key=lambda e: (e.student.casefold(), e.student))
    return Discovery(submissions, students, [_printable(w) for w in context.warnings], layout)


def _choose_duplicate(slot: tuple[str, str, str], candidates: list[_Candidate],
                      warnings: list[str]) -> _Candidate:
    """One file per student and notebook: an undecorated name, else the last in name order."""
    ordered = sorted(candidates, key=lambda c: _natural_key(c.source))
    plain = [c for c in ordered if not c.decorated]
    chosen = (plain or ordered)[-1]
    if len(ordered) > 1:
        student, assignment, notebook = slot
        why = "its name has no copy decoration" if plain else "it is the last in name order"
        ignored = [c.source for c in ordered if c is not chosen]
        warnings.append(f"{student}: {len(ordered)} files for {assignment}/{notebook}: grading "
                        f"{chosen.source!r} ({why}), ignoring {_names(ignored)}")
    return chosen


def _warn_changed_ids(scan: _Scan, ids: dict[str, str], warnings: list[str]) -> None:
    """Say which folders are graded under another name.

    Recognised LMS folder names always change (the id is "<name>_<LMS id>"):
    one line for all of them rather than one per student.
    """
    recognised = [key for key, owner in scan.owners.items() if owner.lms]
    for key, owner in scan.owners.items():
        if not owner.lms and ids[key] != key:
            warnings.append(f"student folder {key!r} is graded as {ids[key]!r}")
    if recognised:
        lms = sorted({scan.owners[key].lms for key in recognised})
        warnings.append(f"recognised {' and '.join(lms)} folder names of {len(recognised)} "
                        f"student(s): ids are <name>_<LMS id>, e.g. {ids[recognised[0]]!r}; "
                        f"the student map lists who is who")


def _nothing_to_grade(context: _Context, found: str) -> GradingInputError:
    assignment = sorted(context.notebooks_by_assignment)[0]
    notebook = sorted(context.notebooks_by_assignment[assignment])[0]
    found = found or _describe_contents(context.root)
    return GradingInputError(
        f"{context.input_path} holds no notebook to grade. Found instead: {found}.\n"
        f"Accepted layouts (a folder, or a .zip of one):\n"
        f"  1. nbgrader: INPUT/<student>/<assignment>/<notebook>.ipynb, "
        f"e.g. INPUT/alice/{assignment}/{notebook}.ipynb\n"
        f"  2. one folder per student (Moodle 'download all'): INPUT/<student>/<notebook>.ipynb, "
        f"e.g. INPUT/alice/{notebook}.ipynb\n"
        f"  3. flat files (Canvas, Moodle): INPUT/<student>_<notebook>.ipynb, "
        f"e.g. INPUT/alice_{notebook}.ipynb")


def _describe_contents(root: Path) -> str:
    entries = _visible(root)
    if not entries:
        return "nothing (the folder is empty)"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    text = f"{len(entries)} item(s): {_names(names)}"
    deeper = next((p for p in sorted(root.rglob(f"*{NOTEBOOK_SUFFIX}"))
                   if not any(_is_ignored(part) for part in p.relative_to(root).parts)), None)
    if deeper is not None:
        text += (f"; the first notebook is {deeper.relative_to(root).as_posix()}: give the "
                 f"folder that holds the student folders")
    return text

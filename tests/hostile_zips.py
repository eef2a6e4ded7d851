"""Zips that ordinary tools do not write, for the tests of the grader's zip intake."""
import re
import warnings
import zipfile


def make_zip_of_copies(path, members):
    """A zip with ``members`` as (name, text) pairs, where a name may repeat."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        for name, text in members:
            archive.writestr(zipfile.ZipInfo(name), text)
    return path


def name_bytes_marked_utf8(path, placeholder, raw):
    """Rename the member ``placeholder`` of the zip at ``path`` to the bytes ``raw``, marked UTF-8.

    zipfile writes only names it can encode and sets the flags itself, so the
    member is written under an ASCII placeholder of the same length, then, in
    both of its headers, the name bytes are replaced and the UTF-8 flag
    (general purpose bit 11) is set.
    """
    name = placeholder.encode("ascii")
    assert len(name) == len(raw)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo(placeholder), "{}")
    data = bytearray(path.read_bytes())
    local, central = [m.start() for m in re.finditer(re.escape(name), data)]
    for header, signature, name_at, flags_at in ((local, b"PK\x03\x04", 30, 6),
                                                 (central, b"PK\x01\x02", 46, 8)):
        start = header - name_at
        assert data[start:start + 4] == signature
        data[start + flags_at + 1] |= 0x800 >> 8  # the high byte of the little-endian flags
        data[header:header + len(raw)] = raw
    path.write_bytes(bytes(data))
    return path

"""A lean reader of the DICOM header values the scan uses, for the common case (issue 23's speed).

`plain_header(path)` walks a single-frame file's data elements from its start (implicit or
explicit VR little endian), keeps the values of WANTED, skips everything else (sequences of
undefined length through their delimiters) and stops at the pixel data element, whose offset
it records. It builds no pydicom Dataset. The values equal pydicom's (`dcmread(...).get(name)`:
ints for US and IS, floats or lists of floats for DS, stripped strings for text), which is what
data_prep.dicom's scan reads from either.

It returns None, and data_prep.dicom reads the file with pydicom as before, for anything else:
no 'DICM' preamble, another transfer syntax (deflated, big endian, compressed), a VR other
than the dictionary's or than the transfer syntax promises, multi-frame (NumberOfFrames > 1 or
per-frame functional groups), float pixel data, a value it does not parse the way pydicom does (non-ASCII or multi-valued
text, numbers in another format, a value count other than expected), tags out of order, a
truncated file, no pixel data. So errors and odd files keep pydicom's handling and messages.
"""
from __future__ import annotations

import re
import struct

from pydicom.datadict import dictionary_VR, tag_for_keyword

EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
PLAIN_SYNTAXES = (IMPLICIT_LE, EXPLICIT_LE)
# keyword -> values expected (None: a single value, as pydicom returns it unwrapped)
WANTED = {"Rows": None, "Columns": None, "SamplesPerPixel": None, "BitsAllocated": None,
          "BitsStored": None, "PixelRepresentation": None, "PhotometricInterpretation": None,
          "SeriesInstanceUID": None, "StudyInstanceUID": None, "PatientID": None,
          "CardiacNumberOfImages": None, "NumberOfFrames": None, "InstanceNumber": None,
          "TriggerTime": None, "SliceLocation": None, "RescaleSlope": None,
          "RescaleIntercept": None, "ImagePositionPatient": 3, "ImageOrientationPatient": 6,
          "PixelSpacing": 2, "ImagerPixelSpacing": 2}
# seen -> the file is not the common case: pydicom reads it (so is a per-frame functional
# groups sequence with an item that is not empty: a multi-frame file)
DECLINED = ("FloatPixelData", "DoubleFloatPixelData")
_WANTED = {tag_for_keyword(k): (k, dictionary_VR(k).encode(), n) for k, n in WANTED.items()}
_DECLINED = {tag_for_keyword(k) for k in DECLINED}
_PER_FRAME = tag_for_keyword("PerFrameFunctionalGroupsSequence")
_PIXEL_DATA, _SYNTAX = tag_for_keyword("PixelData"), tag_for_keyword("TransferSyntaxUID")
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
# every tag the walk stops at: WANTED (keyword, VR, count), the others (True)
_SPECIAL = {**_WANTED, **dict.fromkeys([*_DECLINED, _PER_FRAME, _PIXEL_DATA], True)}
_UNDEFINED = 0xFFFFFFFF
# explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SHORT = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
          b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_DS = re.compile(r" *[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)? *\Z")
_IS = re.compile(r" *[-+]?\d+ *\Z")
_TEXT = re.compile(r"[\x20-\x5b\x5d-\x7e]*\Z")    # printable ASCII without the backslash
_CHUNK = 8192
_tag, _u16, _u32 = struct.Struct("<HH"), struct.Struct("<H"), struct.Struct("<L")
_explicit, _implicit = struct.Struct("<HH2sHL"), struct.Struct("<HHL")   # element headers


class Declined(Exception):
    """Not the common case: pydicom reads the file."""


class PlainHeader(dict):
    """The WANTED values found (keyword -> value, as pydicom gives them) and where the pixel
    data lies: `syntax` (transfer syntax UID), `pixel_offset` and `pixel_length` in bytes."""
    syntax: str
    pixel_offset: int
    pixel_length: int


class _File:
    """The file's bytes from its start, read in chunks as the walk needs them."""

    def __init__(self, handle):
        self.handle, self.data = handle, handle.read(_CHUNK)

    def need(self, end: int) -> bytes:
        """The bytes read so far, at least up to `end` (Declined at the end of the file)."""
        if end > len(self.data):
            more = self.handle.read(max(end - len(self.data), len(self.data)))
            self.data += more
            if end > len(self.data):
                raise Declined("truncated")
        return self.data


def plain_header(path) -> PlainHeader | None:
    """The header of a plain single-frame file, or None where pydicom must read it."""
    try:
        with open(path, "rb") as handle:
            return _walk(_File(handle))
    except (Declined, OSError, struct.error, UnicodeDecodeError, ValueError):
        return None


def _walk(f: _File) -> PlainHeader:
    if f.need(132)[128:132] != b"DICM":
        raise Declined("no preamble")
    pos, syntax = 132, None
    while True:                           # file meta: explicit VR little endian, group 0002
        group = _u16.unpack_from(f.need(pos + 8), pos)[0]
        if group != 0x0002:
            break
        tag, vr, length, pos = _element(f, pos, True)
        if length == _UNDEFINED:
            raise Declined("undefined length in the file meta")
        if tag == _SYNTAX:
            syntax = f.need(pos + length)[pos:pos + length].decode("ascii").rstrip("\0 ")
        pos += length
    if syntax not in PLAIN_SYNTAXES:
        raise Declined("transfer syntax")
    explicit = syntax == EXPLICIT_LE
    vr = f.need(pos + 6)[pos + 4:pos + 6]  # pydicom's check of the dataset's real encoding
    if (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B) != explicit:
        raise Declined("VR encoding differs from the transfer syntax")
    found, last, data = PlainHeader(), -1, f.data
    head, size, end = (_explicit, 12, len(data)) if explicit else (_implicit, 8, len(data))
    while True:                           # the dataset: one unpack per element header
        if pos + 12 > end:
            data = f.need(pos + size)
            end = len(data)
        if explicit:
            group, element, vr, length, long_length = head.unpack_from(data, pos)
            if vr in _LONG:
                length, pos = long_length, pos + 12
            elif vr in _SHORT:
                pos += 8
            else:
                raise Declined("unknown VR")
        else:
            (group, element, length), vr = head.unpack_from(data, pos), None
            pos += 8
        tag = group << 16 | element
        if tag <= last or group == 0xFFFE:
            raise Declined("tags out of order")
        last = tag
        special = _SPECIAL.get(tag)
        if special is None and length != _UNDEFINED:
            pos += length                 # the common case: an element the scan does not use
            continue
        if tag == _PIXEL_DATA:
            if length == _UNDEFINED or (explicit and vr not in (b"OB", b"OW")):
                raise Declined("encapsulated pixel data")
            break
        if tag in _DECLINED:
            raise Declined("float pixels")
        if tag == _PER_FRAME:             # multi-frame unless its items are empty
            if explicit and vr != b"SQ":
                raise Declined("VR other than the dictionary's")
            pos = _skip_sequence(f, pos, explicit, None if length == _UNDEFINED else pos + length,
                                 empty=True)
        elif length == _UNDEFINED:
            if explicit and vr != b"SQ":
                raise Declined("undefined length outside a sequence")
            pos = _skip_sequence(f, pos, explicit)
        else:                             # a WANTED element
            keyword, want_vr, count = special
            if explicit and vr != want_vr:
                raise Declined("VR other than the dictionary's")
            if pos + length > end:
                data = f.need(pos + length)
            found[keyword] = _value(data[pos:pos + length], want_vr, count)
            pos += length
        data = f.data
        end = len(data)
    if "Rows" not in found or "Columns" not in found or found.get("NumberOfFrames", 1) != 1:
        raise Declined("no image size, or several frames")
    found["PixelData"] = None
    found.syntax, found.pixel_offset, found.pixel_length = syntax, pos, length
    return found


def _element(f: _File, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, offset of the value) of the element at pos."""
    data = f.need(pos + 12)
    group, element = _tag.unpack_from(data, pos)
    tag = group << 16 | element
    if not explicit or group == 0xFFFE:   # implicit VR, or an item / delimiter
        return tag, None, _u32.unpack_from(data, pos + 4)[0], pos + 8
    vr = data[pos + 4:pos + 6]
    if vr in _LONG:
        return tag, vr, _u32.unpack_from(data, pos + 8)[0], pos + 12
    if vr in _SHORT:
        return tag, vr, _u16.unpack_from(data, pos + 6)[0], pos + 8
    raise Declined("unknown VR")


def _skip_sequence(f: _File, pos: int, explicit: bool, end: int | None = None,
                   empty: bool = False) -> int:
    """The offset after a sequence whose items start at pos: of undefined length (end None),
    or ending at end. empty: Declined unless every item is empty (data_prep.dicom treats a
    per-frame sequence of empty items as a single-frame file's, as some exporters write it)."""
    while end is None or pos < end:
        tag, _, length, pos = _element(f, pos, False)
        if tag == _SEQ_END and end is None:
            return pos
        if tag != _ITEM or (empty and length not in (0, _UNDEFINED)):
            raise Declined("not an item in a sequence, or an item with content")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:                       # an item of undefined length: up to its delimiter
            tag, vr, length, pos = _element(f, pos, explicit)
            if tag == _ITEM_END:
                break
            if empty:
                raise Declined("an item with content")
            if length == _UNDEFINED:
                if explicit and vr != b"SQ":
                    raise Declined("undefined length outside a sequence")
                pos = _skip_sequence(f, pos, explicit)
            else:
                pos += length
    if pos != end:
        raise Declined("items overrun their sequence")
    return pos


def _value(raw: bytes, vr: bytes, count: int | None):
    """A WANTED value as pydicom converts it (Declined where it would convert it otherwise)."""
    if vr == b"US":
        if len(raw) != 2:
            raise Declined("US value count")
        return _u16.unpack(raw)[0]
    text = raw.decode("ascii")
    if not raw:
        if vr in (b"DS", b"IS"):
            return None                   # pydicom's empty number
        return ""
    if vr in (b"DS", b"IS"):
        items = (text.strip() if vr == b"DS" else text).rstrip(" \0").split("\\")
        pattern, kind = (_DS, float) if vr == b"DS" else (_IS, int)
        if not all(pattern.match(v) for v in items) or len(items) != (count or 1):
            raise Declined("number format or count")
        values = [kind(v) for v in items]
        return values if count else values[0]
    text = text.rstrip("\0 ")
    if not _TEXT.match(text):             # non-ASCII (character sets), controls, several values
        raise Declined("text pydicom may decode otherwise")
    return text

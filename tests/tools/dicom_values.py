#!/usr/bin/python3
"""Independent reading of DICOM files for Ward's codec tests, with pydicom (Debian python3-pydicom).

For each file named on the command line, prints one JSON line: {"file": ..., "syntax": ..., "values": {path: value}}
or {"file": ..., "error": ...}. A path is the tag (8 hex digits), nested as "SEQTAG/item/TAG". Values are canonical so
that any correct reading of the same data agrees, whatever the transfer syntax:
  - sequences: "items:N";
  - text in the Specific Character Set (SH, LO, ST, LT, UT, PN, UC): pydicom's decoded text, values joined by "\\";
  - other text (ASCII by definition): the bytes as Latin-1 without padding;
  - encapsulated pixel data: "fragments:N:" + SHA-256 over each fragment's length and bytes;
  - private elements and binary values: "sha256:" of the bytes in little-endian order (swapped per word for big endian),
    padded to even length.
Group lengths and the file meta information (group 0002) are left out: writers are free to change them.
"""
import hashlib
import json
import struct
import sys
import warnings

import pydicom
from pydicom.dataelem import RawDataElement

warnings.simplefilter("ignore")
# Read DICOMDIRs as plain data sets: pydicom's DicomDir class fails on some valid directory samples.
pydicom.filereader.DicomDir = pydicom.dataset.FileDataset

CHARSET_VRS = {"SH", "LO", "ST", "LT", "UT", "PN", "UC"}
ASCII_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"}
SINGLE_VALUED = {"LT", "ST", "UT", "UR"}
WORD = {"US": 2, "SS": 2, "OW": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "OF": 4, "OL": 4,
        "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8}
PACK = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}


def sha(data):
    """Hash of a value padded to even length: padding an odd-length value, as writers must, changes nothing."""
    return hashlib.sha256(data + b"\0" if len(data) % 2 else data).hexdigest()


def little(data, vr, is_little):
    size = WORD.get(vr, 1)
    if is_little or size == 1:
        return data
    out = bytearray(data)
    for i in range(0, len(out) - size + 1, size):
        out[i:i + size] = out[i:i + size][::-1]
    return bytes(out)


def fragments(data):
    """Items of an encapsulated pixel data value (the bytes between its header and its sequence delimiter)."""
    out, pos, digest = 0, 0, hashlib.sha256()
    while pos + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if (group, element) == (0xFFFE, 0xE0DD):
            break
        digest.update(struct.pack("<I", length))
        digest.update(data[pos:pos + length])
        pos += length
        out += 1
    return f"fragments:{out}:{digest.hexdigest()}"


def text(value):
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def canon(ds, prefix, is_little, out):
    for tag in list(ds.keys()):
        if tag.element == 0 or tag.group == 2:
            continue
        raw = ds.get_item(tag)
        raw_bytes = raw.value if isinstance(raw, RawDataElement) else None
        elem = ds[tag]
        vr = elem.VR
        path = prefix + f"{int(tag):08X}"
        if vr == "SQ":
            out[path] = f"items:{len(elem.value)}"
            for i, item in enumerate(elem.value):
                canon(item, f"{path}/{i}/", is_little, out)
        elif tag.is_private and not tag.is_private_creator:
            value = raw_bytes if raw_bytes is not None else elem.value
            out[path] = "sha256:" + sha(value if isinstance(value, bytes) else b"")
        elif tag == 0x7FE00010 and (getattr(raw, "length", 0) == 0xFFFFFFFF or getattr(elem, "is_undefined_length", False)):
            out[path] = fragments(raw_bytes if raw_bytes is not None else elem.value)
        elif vr in CHARSET_VRS or tag.is_private_creator:
            out[path] = text(elem.value) if elem.value is not None else ""
        elif vr in ASCII_VRS:
            value = raw_bytes.decode("latin-1") if raw_bytes is not None else text(elem.value or "")
            value = value.rstrip(" \0")
            out[path] = value if vr in SINGLE_VALUED else "\\".join(v.strip(" \0") for v in value.split("\\"))
        else:
            if raw_bytes is not None:
                data = little(raw_bytes, vr, is_little)
            elif isinstance(elem.value, bytes):
                data = little(elem.value, vr, is_little)
            elif vr in PACK:
                values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
                data = b"".join(struct.pack("<" + PACK[vr], v) for v in values if v is not None)
            elif vr == "AT":
                values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
                data = b"".join(struct.pack("<HH", int(v) >> 16, int(v) & 0xFFFF) for v in values if v is not None)
            else:
                data = b""
            out[path] = "sha256:" + sha(data)


def main():
    for name in sys.argv[1:]:
        try:
            ds = pydicom.dcmread(name, force=True)
            values = {}
            canon(ds, "", ds.is_little_endian, values)
            syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
            print(json.dumps({"file": name, "syntax": syntax, "values": values}, ensure_ascii=False))
        except Exception as e:  # noqa: BLE001 - reported to the test, which decides
            print(json.dumps({"file": name, "error": f"{type(e).__name__}: {e}"}))


if __name__ == "__main__":
    main()

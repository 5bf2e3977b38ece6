#!/usr/bin/env python3
"""An independent verifier of a Ward patient access log (not Ward code: Python's hashlib and the cryptography package).

Reads JSON on stdin: {"vkey": "<C2SP verifier key>", "checkpoint": "<signed note>",
"entries": [{"index": N, "event": "<base64 AuditEvent>", "proof": ["<base64 hash>", ...]}]}.
Checks the checkpoint's Ed25519 signature (C2SP signed note), then each entry's RFC 9162 inclusion proof
against the checkpoint's root. Prints "verified <n> entries against <origin> size <size>" or fails with exit 1.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def fail(message):
    print(message)
    sys.exit(1)


def verify_note(note, vkey):
    name, key_hash, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64)
    if key[0] != 1 or len(key) != 33:
        fail("not an Ed25519 verifier key")
    key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
    if key_id.hex() != key_hash:
        fail("verifier key id mismatch")
    text, sep, signatures = note.partition("\n\n")
    if not sep:
        fail("no signature block")
    text += "\n"
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            fail("malformed signature line")
        signer, blob_b64 = line[2:].split(" ")
        blob = base64.b64decode(blob_b64)
        if signer == name and blob[:4] == key_id:
            try:
                Ed25519PublicKey.from_public_bytes(key[1:]).verify(blob[4:], text.encode())
                return text
            except InvalidSignature:
                fail("bad checkpoint signature")
    fail("no signature by the node's key")


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index, size, leaf, proof, root):
    # RFC 9162 section 2.1.3.2
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


request = json.load(sys.stdin)
text = verify_note(request["checkpoint"], request["vkey"].strip())
origin, size, root = text.splitlines()[:3]
size, root = int(size), base64.b64decode(root)
for entry in request["entries"]:
    leaf = hashlib.sha256(b"\x00" + base64.b64decode(entry["event"])).digest()
    proof = [base64.b64decode(h) for h in entry["proof"]]
    if not verify_inclusion(int(entry["index"]), size, leaf, proof, root):
        fail(f"entry {entry['index']} is not in the checkpoint's tree")
print(f"verified {len(request['entries'])} entries against {origin} size {size}")

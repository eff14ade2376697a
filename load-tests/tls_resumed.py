#!/usr/bin/env python3
"""Count full and resumed TLS handshakes to one server port in a pcap file (run.sh, issue 7).

    tls_resumed.py CAPTURE.pcap PORT

Reads the ClientHello and ServerHello of every connection to 127.0.0.1:PORT (both are sent in
clear, also in TLS 1.3) and prints one line:

    handshakes N, resumed R, full F, client offered a session (PSK) O, versions {...}

A TLS 1.3 handshake is resumed when the ServerHello carries the pre_shared_key extension
(the server accepted a ticket the client offered); a TLS 1.2 one when the server echoes the
non-empty session id the client offered. Only the first segment of each hello is read, which is
where both messages sit in a loopback capture. Standard library only.
"""
import struct
import sys

PSK = 0x0029
SUPPORTED_VERSIONS = 0x002B


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            return
        magic = struct.unpack("<I", head[:4])[0]
        if magic in (0xA1B2C3D4, 0xA1B23C4D):
            endian = "<"
        elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
            endian = ">"
        else:
            raise SystemExit(f"{path}: not a pcap file (pcapng is not read)")
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            incl = struct.unpack(endian + "I", rec[8:12])[0]
            data = f.read(incl)
            if linktype == 1:  # Ethernet (Linux's lo)
                if len(data) < 14 or data[12:14] != b"\x08\x00":
                    continue
                ip = data[14:]
            elif linktype == 113:  # Linux cooked
                if data[14:16] != b"\x08\x00":
                    continue
                ip = data[16:]
            elif linktype == 276:  # Linux cooked v2
                if data[0:2] != b"\x08\x00":
                    continue
                ip = data[20:]
            elif linktype in (0, 12, 101):  # raw IP / null
                ip = data[4:] if linktype == 0 else data
            else:
                raise SystemExit(f"link type {linktype} not handled")
            yield ip


def tcp_payload(ip):
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack(">H", ip[2:4])[0]
    tcp = ip[ihl:total]
    if len(tcp) < 20:
        return None
    sport, dport = struct.unpack(">HH", tcp[:4])
    off = (tcp[12] >> 4) * 4
    return sport, dport, tcp[off:]


def hello(payload, want_type):
    """The extensions {type: data} and session id of a ClientHello (1) / ServerHello (2)."""
    if len(payload) < 9 or payload[0] != 0x16 or payload[5] != want_type:
        return None
    body = payload[9:]
    i = 2 + 32  # legacy_version, random
    sid_len = body[i]
    sid = body[i + 1:i + 1 + sid_len]
    i += 1 + sid_len
    if want_type == 1:
        cs_len = struct.unpack(">H", body[i:i + 2])[0]
        i += 2 + cs_len
        comp_len = body[i]
        i += 1 + comp_len
    else:
        i += 2 + 1  # cipher suite, compression
    exts = {}
    if i + 2 <= len(body):
        ext_len = struct.unpack(">H", body[i:i + 2])[0]
        i += 2
        end = min(len(body), i + ext_len)
        while i + 4 <= end:
            t, n = struct.unpack(">HH", body[i:i + 4])
            exts[t] = body[i + 4:i + 4 + n]
            i += 4 + n
    return exts, sid


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    client = {}  # client port -> (offered psk, session id)
    n = resumed = full = offered = 0
    versions = {}
    for ip in packets(path):
        seg = tcp_payload(ip)
        if seg is None or not seg[2]:
            continue
        sport, dport, payload = seg
        if dport == port:
            h = hello(payload, 1)
            if h is not None:
                exts, sid = h
                client[sport] = (PSK in exts, sid)
                offered += PSK in exts
        elif sport == port:
            h = hello(payload, 2)
            if h is None:
                continue
            exts, sid = h
            n += 1
            sv = exts.get(SUPPORTED_VERSIONS)
            version = "TLSv1.3" if sv == b"\x03\x04" else "TLSv1.2"
            versions[version] = versions.get(version, 0) + 1
            if version == "TLSv1.3":
                was_resumed = PSK in exts
            else:
                offered_sid = client.get(dport, (False, b""))[1]
                was_resumed = bool(offered_sid) and offered_sid == sid
            if was_resumed:
                resumed += 1
            else:
                full += 1
    print(f"handshakes {n}, resumed {resumed}, full {full}, "
          f"client offered a session (PSK) {offered}, versions {versions}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Verify a captured flood log: every line FLOOD#0..N-1 present exactly once, unsplit.

usage: checklines.py N FILE... (files read in the order given, e.g. rotated logs first)

A line counts as intact if, after any prefix the supervisor adds (such as
"flood | "), it is exactly the 99-byte payload flood.c wrote. Prints one line:
    lines=... intact=... missing=... duplicated=... damaged=... out_of_order=...
and exits 0 (it is a measurement, not a test)."""
import sys

def main():
    n = int(sys.argv[1])
    seen = bytearray(n)
    intact = dup = damaged = ooo = total = 0
    last = -1
    pad = b"x" * (99 - 17)
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            for line in f:
                i = line.find(b"FLOOD#")
                if i < 0:
                    continue
                total += 1
                body = line[i:].rstrip(b"\n")
                try:
                    num = int(body[6:16])
                except ValueError:
                    damaged += 1
                    continue
                if len(body) != 99 or body[16:17] != b" " or body[17:] != pad or not 0 <= num < n:
                    damaged += 1
                    continue
                if seen[num]:
                    dup += 1
                    continue
                seen[num] = 1
                intact += 1
                if num < last:
                    ooo += 1
                last = num
    missing = n - intact
    print(f"lines={total} intact={intact} missing={missing} duplicated={dup} "
          f"damaged={damaged} out_of_order={ooo}")

if __name__ == "__main__":
    main()

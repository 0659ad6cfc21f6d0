"""Line deltas: a text file rebuilt from the base's copy and the lines that changed.

A delta pack (`pack --base`) ships `products.jsonl` this way when that is smaller:
a repricing touches a tenth of the lines, and the rest are the base's own.
The patch is a sequence of operations, each a header line:

    C <start> <count>\\n       copy <count> lines of the base file, from line <start> (0-based)
    L <bytes>\\n<bytes bytes>  these bytes, as they are

Applying one is bounded: the result may not grow past the size the (signed)
manifest declares for the file, and the install then checks its sha256 like
any other file's.
"""

from __future__ import annotations

from edge_search.errors import InstallError

PREFIX = "delta/"  # archive members `delta/<name>`: a patch for the manifest's file <name>
SUFFIXES = (".jsonl",)  # files made of lines that stay put when others change


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def make_patch(old: bytes, new: bytes) -> bytes:
    """A patch that turns `old` into `new`: runs of lines found in `old` in the same order are copied,
    the rest written out. Linear: each line is looked up by its bytes (product lines are unique)."""
    where: dict[bytes, int] = {}
    for i, line in enumerate(lines(old)):
        where.setdefault(line, i)
    out: list[bytes] = []
    run_start, run_len, literal = -1, 0, []

    def flush():
        nonlocal run_len
        if run_len:
            out.append(b"C %d %d\n" % (run_start, run_len))
            run_len = 0
        if literal:
            data = b"".join(literal)
            out.append(b"L %d\n" % len(data) + data)
            literal.clear()

    for line in lines(new):
        i = where.get(line)
        if i is not None and run_len and i == run_start + run_len and not literal:
            run_len += 1
        elif i is not None:
            flush()
            run_start, run_len = i, 1
        else:
            if run_len:
                out.append(b"C %d %d\n" % (run_start, run_len))
                run_len = 0
            literal.append(line)
    flush()
    return b"".join(out)


def apply_patch(old: bytes, patch: bytes, limit: int, where: str) -> bytes:
    """`old` patched; InstallError on a malformed patch, a copy outside `old`, or a result over `limit` bytes."""
    base = lines(old)
    out: list[bytes] = []
    size, pos = 0, 0
    while pos < len(patch):
        end = patch.find(b"\n", pos, pos + 64)
        if end < 0:
            raise InstallError(f"{where}: malformed line delta (an operation header at byte {pos})")
        head = patch[pos:end].split(b" ")
        pos = end + 1
        try:
            if head[0] == b"C" and len(head) == 3:
                start, count = int(head[1]), int(head[2])
                if start < 0 or count < 1 or start + count > len(base):
                    raise ValueError("a copy outside the base file")
                chunk = base[start:start + count]
                size += sum(len(x) for x in chunk)
            elif head[0] == b"L" and len(head) == 2:
                n = int(head[1])
                if n < 1 or pos + n > len(patch):
                    raise ValueError("literal bytes past the end")
                chunk, pos = [patch[pos:pos + n]], pos + n
                size += n
            else:
                raise ValueError("an unknown operation")
        except ValueError as e:
            raise InstallError(f"{where}: malformed line delta ({e})") from None
        if size > limit:
            raise InstallError(f"{where}: the line delta builds more than the {limit} bytes the manifest declares")
        out += chunk
    return b"".join(out)

"""Load generator for benches/memory.sh: idle sessions, then parallel large
submissions, printing the server's VmRSS/VmHWM (MiB) after each step."""
import asyncio, sys, time

pid, port, idle, parallel, size_mib, bound = (int(a) for a in sys.argv[1:7])


def mem():
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) // 1024
    return fields


async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise RuntimeError("connection closed")
        if line[3:4] != b"-":
            return line


async def idle_session():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert (await reply(r)).startswith(b"220"), "greeting"
    w.write(b"EHLO idle.test\r\n")
    await w.drain()
    assert (await reply(r)).startswith(b"250")
    return r, w


LINE = b"x" * 998 + b"\r\n"


async def submit(i):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    await reply(r)
    w.write(b"EHLO load.test\r\nMAIL FROM:<load@bench.test>\r\nRCPT TO:<sink@example.invalid>\r\nDATA\r\n")
    for _ in range(4):
        await reply(r)
    w.write(b"Subject: load %d\r\n\r\n" % i)
    block = LINE * 1024  # 1,000 KiB
    left = size_mib * 1024 * 1024
    while left > 0:
        chunk = block[:left]
        w.write(chunk)
        await w.drain()
        left -= len(chunk)
    # The body may end mid-line: CRLF first, or "." would not end DATA.
    w.write(b"\r\n.\r\n")
    await w.drain()
    line = await reply(r)
    w.close()
    return line


async def main():
    base = mem()
    print(f"baseline: RSS {base['VmRSS']} MiB")
    conns = []
    for start in range(0, idle, 200):
        conns += await asyncio.gather(*(idle_session() for _ in range(min(200, idle - start))))
    time.sleep(0.5)
    after_idle = mem()
    print(f"{idle} idle sessions: RSS {after_idle['VmRSS']} MiB "
          f"({(after_idle['VmRSS'] - base['VmRSS']) * 1024 // max(idle, 1)} KiB each)")
    t = time.time()
    results = await asyncio.gather(*(submit(i) for i in range(parallel)))
    took = time.time() - t
    ok = sum(1 for l in results if l.startswith(b"250"))
    peak = mem()
    print(f"{parallel} x {size_mib} MiB submissions with {idle} idle open: {ok} accepted "
          f"in {took:.1f}s; RSS now {peak['VmRSS']} MiB, peak (VmHWM) {peak['VmHWM']} MiB")
    for r, w in conns:
        w.close()
    if ok != parallel:
        print("FAIL: not every submission was accepted:", set(results))
        sys.exit(1)
    if peak["VmHWM"] > bound:
        print(f"FAIL: peak RSS {peak['VmHWM']} MiB over the bound {bound} MiB")
        sys.exit(1)
    print(f"OK: peak RSS {peak['VmHWM']} MiB <= {bound} MiB")


asyncio.run(main())

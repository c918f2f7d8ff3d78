#!/usr/bin/python3
"""profile.py — the benchmark's `profile` step: where the CPU time of small-instance ingest
goes, for the CLI (`dicomfs ingest`) and for STOW-RS (50 instances/request, 2 curl clients,
stowcurl.py), split into buckets by the symbols and libraries in each sample's stack.

    profile.py --bin DICOMFS --dataset DS --work DIR [--logs DIR] [--what "ingest stow"]
               [--freq HZ] [--per 50] [--keep-data]

For each workload, on a fresh archive directory (never one just deleted: see DELETED below):
  1. an unprofiled run: the CPU time (user+sys, all threads) of the process doing the work —
     `dicomfs ingest` (getrusage of the child) or `dicomfs serve` (/proc/PID/stat over the
     STOW run) — per stored instance, and the wall time;
  2. a run under `strace -f -c -w --seccomp-bpf -e trace=fsync,fdatasync,syncfs`: the wall
     time threads spent waiting in those calls (summed over threads) — "fsync wait", which a
     CPU profile cannot see (a thread blocked in fsync takes no samples);
  3. `perf record -e cpu-clock -F HZ --call-graph dwarf` of the same run: every sample
     weighs its period (ns of CPU), classified by BUCKETS (first rule that matches anywhere
     in the stack, in this order). DWARF call graphs, not -g (frame pointers): Debian's
     libdcmdata, libsqlite3 and libc are built without frame pointers, so -g stacks stop at
     the first frame of those libraries and the callers (whose file write is it?) are lost.
The bucket's share of the profiled samples times the unprofiled CPU per instance gives ms per
instance per bucket. Prints one JSON object; progress on stderr.

DELETED: on ext4 mounted without a journal (this machine's root) a new inode is only
allocated after scanning past inodes deleted in the last 30 s (ext4's recently_deleted()),
so an archive created right after the previous one was deleted pays for each deleted file.
The step therefore makes each archive in a new directory and deletes them all at its end.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")

# ---- classification ---------------------------------------------------------------------
# Each rule: (bucket, test(frames)) where frames = [(sym, dso)], leaf first. The first rule
# that matches anywhere in the stack wins; the order matters (a write under SQLite is SQLite's,
# a read under DCMTK's loadFile is file I/O, DCMTK calls made by the JSON writer are JSON).

FSYNC_SYMS = {"__x64_sys_fsync", "__x64_sys_fdatasync", "__x64_sys_syncfs", "do_fsync", "sync_filesystem",
              "ext4_sync_file", "ext4_sync_fs", "fsync", "fdatasync", "syncfs"}
FILE_SYSCALLS = {"open", "openat", "openat2", "creat", "close", "close_range", "read", "pread64", "readv",
                 "write", "pwrite64", "writev", "pwritev", "rename", "renameat", "renameat2", "unlink",
                 "unlinkat", "mkdir", "mkdirat", "rmdir", "newfstat", "newfstatat", "newlstat", "newstat",
                 "statx", "lseek", "ftruncate", "fallocate", "copy_file_range", "sendfile64", "getdents64",
                 "access", "faccessat", "faccessat2", "readlink", "fchmod", "link", "linkat", "flock",
                 "fadvise64", "statfs", "fstatfs"}
FILE_KPREFIX = ("ext4_", "__ext4", "jbd2", "vfs_", "__fput", "filemap_", "iomap_", "generic_perform_write",
                "mpage_", "blk_", "submit_bio", "path_openat", "do_sys_open", "do_filp_open")
NET_KPREFIX = ("tcp_", "inet_", "sock_", "__sys_recvfrom", "__sys_sendto", "__sys_sendmsg", "__sys_recvmsg",
               "__x64_sys_recvfrom", "__x64_sys_sendto", "__x64_sys_sendmsg", "__x64_sys_recvmsg",
               "__x64_sys_accept4", "__x64_sys_epoll_wait", "__x64_sys_poll", "__x64_sys_select",
               "__x64_sys_shutdown", "skb_", "__skb", "ip_", "__ip_", "net_rx", "__netif", "loopback_")
INODE_ALLOC = {"__ext4_new_inode", "ext4_new_inode", "find_inode_bit", "recently_deleted"}
DB_SYMS = {"index_insert", "index_write_level", "index_clear_tag", "index_clear_level", "refresh_level",
           "step_done", "db_exec", "db_open", "db_close", "db_get", "db_idle", "db_put"}
JSON_SYMS = {"extract", "valid_utf8"}
VALIDATION_SYMS = {"prune", "check_element", "validate_required", "check_uid", "add_failed", "is_required",
                   "printable", "dcm_printable", "tag_text", "is_bulk_vr", "is_text_vr"}
INDEX_SYMS = {"index_extract", "index_add_value", "ix_add", "add_person_name", "index_request",
              "index_extract_xqt", "ix_list_serialize", "index_values_from_json", "index_value_from_json",
              "frames_encode", "xqt_index_item", "find_value"}
PARSE_DSOS = ("libdcmdata", "libofstd", "liboflog", "libdcmimgle", "libdcmimage", "libdcmjpeg", "libdcmjpls",
              "libdcmtkcharls", "libi2d", "libdcmxml")
PARSE_SYMS = {"dcm_parse", "find_frames", "read_attr", "looks_like_dicom", "convert_to_utf8", "reencode_text",
              "via_iconv", "scrub_utf8", "decode_iso2022_jp", "frames_native", "frames_encapsulated",
              "pixel_value_offset_by_parse", "deferred_offset", "dcm_parsed_free", "dcm_global_init"}
HTTP_PREFIX = ("web_", "stow_", "MHD_", "on_part_", "on_request", "on_completed", "begin_upload", "end_upload",
               "sop_item", "failed_attributes", "respond")
MEMORY_SYMS = {"malloc", "free", "_int_malloc", "_int_free", "cfree", "realloc", "calloc", "_int_realloc",
               "malloc_consolidate", "__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc",
               "unlink_chunk", "sysmalloc", "_int_free_merge_chunk", "_int_free_create_chunk",
               "asm_exc_page_fault", "exc_page_fault", "__x64_sys_munmap", "__x64_sys_mmap", "__x64_sys_brk",
               "__x64_sys_madvise", "__x64_sys_mprotect", "operator new", "operator delete"}


def base(dso):
    return os.path.basename(dso or "")


def is_kernel(dso):
    return dso.startswith("[kernel") or dso == "[unknown]" and False


def classify(frames):
    syms = [s for s, _ in frames]
    dsos = [base(d) for _, d in frames]
    sset = set(syms)
    kern = [s for s, d in frames if d.startswith("[kernel")]
    if sset & FSYNC_SYMS:
        return "fsync"
    if any(d.startswith("libsqlite3") for d in dsos) or any(s.startswith("sqlite3") for s in syms) or \
            sset & DB_SYMS:
        return "sqlite"
    if kern:
        if any(s.startswith(NET_KPREFIX) for s in kern):
            return "http"
        if any(s.startswith("__x64_sys_") and s[10:] in FILE_SYSCALLS for s in kern) or \
                any(s.startswith(FILE_KPREFIX) for s in kern):
            return "file_io"
    if any("writeJson" in s or s.startswith("DcmJsonFormat") for s in syms) or sset & JSON_SYMS:
        return "metadata_json"
    if any(d.startswith("libjansson") for d in dsos):
        return "http" if any(s.startswith(HTTP_PREFIX) for s in syms) else "metadata_json"
    if sset & VALIDATION_SYMS:
        return "validation"
    if sset & INDEX_SYMS or any(s.startswith("norm_") for s in syms):
        return "index_values"
    if any(d.startswith(PARSE_DSOS) for d in dsos) or sset & PARSE_SYMS:
        return "parse"
    if any(s.startswith(HTTP_PREFIX) for s in syms) or any(d.startswith("libmicrohttpd") for d in dsos):
        return "http"
    if sset & MEMORY_SYMS:
        return "memory"
    return "other"


BUCKETS = ["parse", "validation", "metadata_json", "index_values", "sqlite", "file_io", "fsync", "http",
           "memory", "other"]
BUCKET_DOC = {
    "parse": "DCMTK (libdcmdata, libofstd, ...) and the adapter's own parse code (dcm_parse, find_frames, "
             "read_attr, convert_to_utf8, ...), not their file reads",
    "validation": "the adapter's and ingest.c's checks (prune, check_element, validate_required, check_uid, ...)",
    "metadata_json": "DCMTK's writeJson/DcmJsonFormat* called by the adapter, extract(), valid_utf8(); jansson "
                     "outside the web face",
    "index_values": "index.c's values (index_extract, index_add_value, ix_add, ...) and normalize.c (norm_*)",
    "sqlite": "libsqlite3 and the store's SQL wrappers (index_insert, db_exec, ...), including the kernel "
              "time of SQLite's own reads and writes of index.db and its WAL",
    "file_io": "kernel file-system time (ext4, vfs: open/create, write, rename, read, close, unlink) outside "
               "SQLite and fsync; 'inode_alloc' is its part under __ext4_new_inode",
    "fsync": "CPU inside fsync/fdatasync/syncfs (ext4_sync_file, sync_filesystem); the wall-time wait is "
             "fsync_wait_seconds",
    "http": "libmicrohttpd, web/ (web_multipart_*, stow_*), the kernel's TCP, jansson under the STOW answer",
    "memory": "malloc/free, page faults, mmap/brk not under any bucket above",
    "other": "the rest (threads, locks, futex, scheduling, process start-up, libc string functions outside "
             "the buckets above)",
}


def log(msg):
    print("[profile %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


FRAME_RE = re.compile(r"^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")


def read_samples(data):
    """Yields (period_ns, [(sym, dso)]) from perf script."""
    p = subprocess.Popen(["perf", "script", "-i", data, "-F", "comm,tid,period,ip,sym,dso"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
    period, frames = None, []
    for line in p.stdout:
        if not line.strip():
            if period is not None:
                yield period, frames
            period, frames = None, []
            continue
        if not line[0].isspace():
            parts = line.split()
            try:
                period = int(parts[-1])
            except (ValueError, IndexError):
                period = 0
            frames = []
            continue
        m = FRAME_RE.match(line)
        if m:
            sym = m.group(2)
            sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
            if sym.startswith("[unknown]"):
                sym = "[unknown]"
            frames.append((sym, m.group(3)))
    if period is not None:
        yield period, frames
    p.wait()


def short_sym(s):
    s = re.sub(r"\(.*", "", s)  # C++ argument lists
    return s if len(s) <= 70 else s[:67] + "..."


def analyse(data, instances, cpu_ms_per_inst):
    total = 0
    by = {b: 0 for b in BUCKETS}
    inode = 0
    leaf = {}
    for period, frames in read_samples(data):
        if not frames:
            continue
        total += period
        b = classify(frames)
        by[b] += period
        if any(s in INODE_ALLOC for s, _ in frames):
            inode += period
        key = (short_sym(frames[0][0]), base(frames[0][1]), b)
        leaf[key] = leaf.get(key, 0) + period
    if not total:
        return None
    share = {b: v / total for b, v in by.items()}
    out = {
        "samples_cpu_seconds": total / 1e9,
        "buckets": {b: {"share": share[b], "ms_per_instance": share[b] * cpu_ms_per_inst
                        if cpu_ms_per_inst is not None else None} for b in BUCKETS},
        "inode_alloc": {"share": inode / total, "ms_per_instance": inode / total * cpu_ms_per_inst
                        if cpu_ms_per_inst is not None else None},
        "kernel_share": None,
        "top": [{"sym": k[0], "dso": k[1], "bucket": k[2], "share": v / total}
                for k, v in sorted(leaf.items(), key=lambda kv: -kv[1])[:25]],
    }
    out["kernel_share"] = sum(v for k, v in leaf.items() if k[1].startswith("[kernel")) / total
    return out


def strace_summary(path):
    """{syscall: wall seconds} from strace -c -w output."""
    res = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "syncfs"):
                    res[parts[-1]] = float(parts[1])
    except OSError:
        pass
    return res


def fresh(work, label):
    d = os.path.join(work, "%s-%d-%d" % (label, os.getpid(), int(time.time() * 1000)))
    os.makedirs(d)
    return os.path.join(d, "archive")


def stored_of(errfile):
    try:
        with open(errfile) as f:
            m = re.findall(r"^ingest: (\d+) stored", f.read(), re.M)
        return int(m[-1]) if m else 0
    except OSError:
        return 0


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def profile_ingest(a, src, files):
    log("ingest: %d small instances, unprofiled run" % len(files))
    warm(files)
    subprocess.run(["sync"])
    err = os.path.join(a.logs, "profile-ingest.log")
    arch = fresh(a.work, "ingest")
    t0 = time.monotonic()
    with open(err, "w") as e:
        p = subprocess.Popen([a.bin, "ingest", arch, src], stdout=subprocess.DEVNULL, stderr=e)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    n = stored_of(err)
    cpu = ru.ru_utime + ru.ru_stime
    res = {"workload": "dicomfs ingest of the small set (fresh archive)", "instances": n, "files": len(files),
           "wall_seconds": wall, "cpu_seconds": cpu, "user_seconds": ru.ru_utime, "sys_seconds": ru.ru_stime,
           "cpu_ms_per_instance": 1e3 * cpu / n if n else None, "peak_rss_kb": ru.ru_maxrss}
    if a.strace:
        log("ingest: strace run (fsync/fdatasync/syncfs wall time)")
        arch = fresh(a.work, "ingest")
        st = os.path.join(a.work, "strace-ingest.txt")
        subprocess.run(["strace", "-f", "-c", "-w", "--seccomp-bpf", "-e", "trace=fsync,fdatasync,syncfs",
                        "-o", st, a.bin, "ingest", arch, src], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sw = strace_summary(st)
        res["fsync_wait_seconds"] = sum(sw.values())
        res["fsync_wait_by_call"] = sw
        res["fsync_wait_ms_per_instance"] = 1e3 * sum(sw.values()) / n if n else None
    log("ingest: perf record (cpu-clock, %d Hz, dwarf call graphs)" % a.freq)
    arch = fresh(a.work, "ingest")
    data = os.path.join(a.work, "ingest.perf.data")
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(a.freq), "--call-graph", "dwarf,16384",
                    "-o", data, "--", a.bin, "ingest", arch, src], stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(a.logs, "profile-perf-ingest.log"), "w"))
    log("ingest: perf script (classifying the samples)")
    res["profile"] = analyse(data, n, res["cpu_ms_per_instance"])
    res["perf_data"] = data
    return res


class Serve:
    def __init__(self, a, label, wrap=()):
        self.dir = fresh(a.work, label)
        os.makedirs(self.dir)
        self.err = open(os.path.join(a.logs, "profile-serve.log"), "ab")
        self.p = subprocess.Popen(list(wrap) + [a.bin, "serve", self.dir, "--http", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=self.err)
        line = self.p.stdout.readline().decode("utf-8", "replace").strip()
        if " at http://" not in line:
            self.stop()
            raise RuntimeError("dicomfs serve did not start: %r" % line)
        self.url = line.rsplit(" at ", 1)[1] + "/v2/studies"
        self.pid = self.p.pid
        if wrap:  # the server is strace's child
            for _ in range(50):
                kids = open("/proc/%d/task/%d/children" % (self.p.pid, self.p.pid)).read().split()
                if kids:
                    self.pid = int(kids[0])
                    break
                time.sleep(0.05)

    def stop(self):
        if self.pid != self.p.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        elif self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()


def stow_run(a, srv, lst):
    r = subprocess.run([sys.executable, os.path.join(HERE, "stowcurl.py"), "--url", srv.url, "--list", lst,
                        "--per", str(a.per), "--clients", "2", "--cache", os.path.join(a.cache),
                        "--server-pid", str(srv.pid)], stdout=subprocess.PIPE)
    return json.loads(r.stdout)


def profile_stow(a, files):
    lst = os.path.join(a.work, "small.txt")
    with open(lst, "w") as f:
        f.write("".join(x + "\n" for x in files))
    log("stow: %d small instances, %d/request, 2 curl clients, unprofiled run" % (len(files), a.per))
    srv = Serve(a, "stow")
    try:
        st = stow_run(a, srv, lst)
    finally:
        srv.stop()
    n = st["instances"] if not st["failed_requests"] else st["instances"] - st["failed_requests"] * a.per
    cpu = st.get("server_cpu_seconds")
    res = {"workload": "STOW-RS of the small set, %d/request, 2 curl clients (stowcurl.py keep-alive), "
                       "fresh archive" % a.per, "instances": n, "wall_seconds": st["seconds"], "cpu_seconds": cpu,
           "cpu_ms_per_instance": 1e3 * cpu / n if cpu is not None and n else None,
           "client_cpu_seconds": st["client_cpu_seconds"], "failed_requests": st["failed_requests"],
           "first_error": st["first_error"]}
    if a.strace:
        log("stow: strace run (fsync/fdatasync/syncfs wall time)")
        stf = os.path.join(a.work, "strace-stow.txt")
        srv = Serve(a, "stow", ("strace", "-f", "-c", "-w", "--seccomp-bpf", "-e", "trace=fsync,fdatasync,syncfs",
                                "-o", stf))
        try:
            stow_run(a, srv, lst)
        finally:
            srv.stop()
        sw = strace_summary(stf)
        res["fsync_wait_seconds"] = sum(sw.values())
        res["fsync_wait_by_call"] = sw
        res["fsync_wait_ms_per_instance"] = 1e3 * sum(sw.values()) / n if n else None
    log("stow: perf record -p (cpu-clock, %d Hz, dwarf call graphs)" % a.freq)
    data = os.path.join(a.work, "stow.perf.data")
    srv = Serve(a, "stow")
    try:
        perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(a.freq), "--call-graph",
                                 "dwarf,16384", "-o", data, "-p", str(srv.pid)], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(a.logs, "profile-perf-stow.log"), "w"))
        time.sleep(0.5)  # perf attaches
        stow_run(a, srv, lst)
        perf.send_signal(signal.SIGINT)
        perf.wait(120)
    finally:
        srv.stop()
    log("stow: perf script (classifying the samples)")
    res["profile"] = analyse(data, n, res["cpu_ms_per_instance"])
    res["perf_data"] = data
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--logs")
    ap.add_argument("--what", default="ingest stow")
    ap.add_argument("--freq", type=int, default=1000)
    ap.add_argument("--per", type=int, default=50)
    ap.add_argument("--no-strace", dest="strace", action="store_false")
    ap.add_argument("--keep-data", action="store_true", help="keep the perf.data files (for perf report)")
    a = ap.parse_args()
    a.logs = a.logs or a.work
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.logs, exist_ok=True)
    a.cache = os.path.join(os.path.dirname(os.path.abspath(a.work)), "stowcurl-cache")
    if shutil.which("perf") is None:
        print(json.dumps({"error": "perf not found (Debian: apt-get install linux-perf)"}))
        return 1
    if a.strace and shutil.which("strace") is None:
        log("strace not found: no fsync wait figures")
        a.strace = False
    src = os.path.join(a.dataset, "small")
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs)
    out = {"freq_hz": a.freq, "buckets_doc": BUCKET_DOC, "order": BUCKETS}
    try:
        if "ingest" in a.what.split():
            out["ingest"] = profile_ingest(a, src, files)
        if "stow" in a.what.split():
            out["stow"] = profile_stow(a, files)
    finally:
        for d in os.listdir(a.work):  # the archives, deleted only now (see DELETED above)
            if d.startswith(("ingest-", "stow-")):
                shutil.rmtree(os.path.join(a.work, d), ignore_errors=True)
        if not a.keep_data:
            for k in ("ingest", "stow"):
                if k in out and out[k].get("perf_data"):
                    try:
                        os.unlink(out[k]["perf_data"])
                    except OSError:
                        pass
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
import json, os, sys, time, subprocess
ctl = "@CTL@"
with open(os.path.join(ctl, "calls"), "a") as f:
    f.write(json.dumps({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid()}) + "\n")
probe = os.path.join(ctl, "probe")
if os.path.exists(probe) and not os.path.exists(probe + "-result"):
    secret, outside, port = open(probe).read().split("\n")
    res = []
    def attempt(name, fn):
        try:
            fn()
            res.append(name + "=ok")
        except PermissionError as e:
            res.append(name + "=denied " + str(e))
        except Exception as e:
            res.append(name + "=error " + repr(e))
    attempt("read_secret", lambda: open(secret).read())
    attempt("create_outside", lambda: open(outside, "w").write("x"))
    def write_channel():
        p = os.path.join(sys.argv[-1], ".probe")
        open(p, "w").write("x")
        os.remove(p)
    attempt("write_channel", write_channel)
    import socket
    attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=2))
    # What a real conda (Python, psutil) reads of its own process.
    attempt("proc_self_status", lambda: open("/proc/self/status").read())
    attempt("proc_self_mounts", lambda: open("/proc/self/mounts").read())
    def write_tmpdir():
        p = os.path.join(os.environ["TMPDIR"], "probe")
        open(p, "w").write("x")
        os.remove(p)
    attempt("write_tmpdir", write_tmpdir)
    with open(os.path.join(ctl, "tmpdir"), "w") as f:
        f.write(os.environ["TMPDIR"])
    open(probe + "-result", "w").write("\n".join(res) + "\n")
if os.path.exists(os.path.join(ctl, "hang")):
    # A grandchild too: the whole process group must be killed.
    child = subprocess.Popen(["sleep", "300"])
    with open(os.path.join(ctl, "pids"), "a") as f:
        f.write("%d %d\n" % (os.getpid(), child.pid))
    time.sleep(300)
if os.path.exists(os.path.join(ctl, "fail")):
    print("conda-index: simulated crash", file=sys.stderr)
    sys.exit(3)
time.sleep(float(open(os.path.join(ctl, "sleep")).read()) if os.path.exists(os.path.join(ctl, "sleep")) else 0)
args = sys.argv[1:]
assert args[0] == "index", args
sub = args[args.index("--subdir") + 1]
channel = args[-1]
d = os.path.join(channel, sub)
os.makedirs(d, exist_ok=True)
if os.path.exists(os.path.join(ctl, "garbage")):
    open(os.path.join(d, "repodata.json"), "w").write("{not json")
    sys.exit(0)
doc = {"info": {"subdir": sub}, "packages": {}, "packages.conda": {}, "removed": [], "repodata_version": 1}
for fn in sorted(os.listdir(d)):
    if fn.endswith(".tar.bz2"):
        doc["packages"][fn] = {"size": os.path.getsize(os.path.join(d, fn))}
    elif fn.endswith(".conda"):
        doc["packages.conda"][fn] = {"size": os.path.getsize(os.path.join(d, fn))}
tmp = os.path.join(d, ".repodata.json.tmp")
open(tmp, "w").write(json.dumps(doc))
os.replace(tmp, os.path.join(d, "repodata.json"))

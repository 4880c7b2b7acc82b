"""Security tests of what apsd runs: the command allow-list (when a job is
added and again when it runs), no shell unless argv names one, a minimal
environment and no inherited file descriptors in the child, and the
run-as user (when the tests run as root).

Run: bazel test //tests/security:commands_test, or from the tree root
/usr/bin/python3 tests/security/test_commands.py (after bazel build
//service:apsd //proto:apsd_py).
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import APSD, Daemon, T, cmd_job, far_date, free_port, grpc, pb  # noqa: E402

C = grpc.StatusCode
EXECUTED, ERROR = pb.EVENT_TYPE_JOB_EXECUTED, pb.EVENT_TYPE_JOB_ERROR


def script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)


def wait_run(d, job_id, after, timeout=30):
    """The first JOB_EXECUTED or JOB_ERROR event of job_id after `after`."""
    got, err = [], []
    stream = d.sched.SubscribeEvents(pb.SubscribeEventsRequest(
        after_sequence=after, job_ids=[job_id], types=[EXECUTED, ERROR]), timeout=timeout)

    def run():
        try:
            for item in stream:
                if item.WhichOneof("item") == "event":
                    got.append(item.event)
                    return
        except grpc.RpcError as e:
            err.append(e)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout=timeout + 5)
    stream.cancel()
    th.join(timeout=10)
    if not got:
        raise AssertionError("no run event for %s: %r" % (job_id, err))
    return got[0]


def last_seq(d):
    return d.sched.GetScheduler(pb.GetSchedulerRequest(), timeout=T).event_log.last_sequence


def run_job(d, job_id, argv, env=None, cwd=""):
    """Adds a job that runs once, now; returns its run event."""
    after = last_seq(d)
    d.sched.AddJob(pb.AddJobRequest(job=pb.Job(id=job_id, target=pb.Target(command=pb.CommandTarget(
        argv=list(argv), env=env or {}, cwd=cwd)))), timeout=T)
    return wait_run(d, job_id, after)


def run_now(d, job_id):
    after = last_seq(d)
    d.sched.RunJobNow(pb.RunJobNowRequest(job_id=job_id), timeout=T)
    return wait_run(d, job_id, after)


class AllowListTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="apsd-sec-cmd-")
        t = cls.tmp
        for sub in ("allowed", "allowed/sub", "forbidden", "evil", "marks"):
            os.makedirs(os.path.join(t, sub))
        script(os.path.join(t, "allowed", "ok.sh"), "echo ok")
        script(os.path.join(t, "allowed", "swap.sh"), "echo swap")
        script(os.path.join(t, "allowed", "sub", "deep.sh"), "echo deep")
        script(os.path.join(t, "forbidden", "evil.sh"), "touch %s/marks/evil-ran" % t)
        script(os.path.join(t, "evil", "true"), "touch %s/marks/path-ran" % t)
        os.symlink("/bin/cat", os.path.join(t, "allowed", "link-to-cat"))
        cls.allow = ["/bin/true", "/bin/echo", "/usr/bin/env", "/bin/ls", "/bin/sh", os.path.join(t, "allowed") + "/"]
        flags = ["--allow-env", "PATH", "--allow-env", "JOB_*"]
        for a in cls.allow:
            flags += ["--allow-command", a]
        cls.d = Daemon(t, flags, env=dict(os.environ, APSD_TEST_SECRET="do-not-leak")).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        log = cls.d.log_text()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc != 0:
            raise AssertionError("apsd exited with %r:\n%s" % (rc, log))

    def add(self, job_id, argv, **kw):
        return self.d.sched.AddJob(pb.AddJobRequest(job=cmd_job(job_id, argv=argv, **kw)), timeout=T)

    def test_checked_when_added(self):
        t = self.tmp
        allowed = ["/bin/true", "true", "/usr/bin/true", "/bin/../bin/true", "/bin/echo",
                   t + "/allowed/ok.sh", t + "/allowed/./ok.sh",
                   t + "/allowed/missing.sh"]  # may appear later: judged again when run
        refused = ["/bin/cat", "cat", "/usr/bin/id", "/bin/bash", "/usr/bin/python3",
                   t + "/allowed/../forbidden/evil.sh",   # .. out of the allowed directory
                   t + "/allowed/sub/deep.sh",            # a directory entry allows its files only
                   t + "/allowed/link-to-cat",            # judged by where the link points
                   t + "/allowed", t + "/allowed/",       # the directory itself
                   "./ok.sh", "allowed/ok.sh",            # relative paths
                   "/bin/true/", "/bin/truex"]
        for i, argv0 in enumerate(allowed):
            j = self.add("allowed-%d" % i, [argv0], trigger=far_date())
            self.assertEqual(j.target.command.argv[0], argv0)  # stored as given
        for i, argv0 in enumerate(refused):
            with self.assertRaises(grpc.RpcError, msg=argv0) as cm:
                self.add("refused-%d" % i, [argv0], trigger=far_date())
            self.assertEqual(cm.exception.code(), C.PERMISSION_DENIED, argv0)
            self.assertIn("job.target.command.argv[0]", cm.exception.details())
            self.assertIn("allow-list", cm.exception.details())
        # Changing the program of an existing job is checked the same way.
        with self.assertRaises(grpc.RpcError) as cm:
            self.d.sched.ModifyJob(pb.ModifyJobRequest(
                job=cmd_job("allowed-0", argv=["/bin/cat", "/etc/shadow"]),
                update_mask={"paths": ["target"]}), timeout=T)
        self.assertEqual(cm.exception.code(), C.PERMISSION_DENIED)
        with self.assertRaises(grpc.RpcError) as cm:
            self.d.sched.AddJob(pb.AddJobRequest(job=cmd_job("allowed-0", argv=["/bin/cat"]),
                                                 replace_existing=True), timeout=T)
        self.assertEqual(cm.exception.code(), C.PERMISSION_DENIED)
        j = self.d.sched.GetJob(pb.GetJobRequest(job_id="allowed-0"), timeout=T)
        self.assertEqual(list(j.target.command.argv), ["/bin/true"])
        print("allow-list: %d programs accepted, %d refused with PERMISSION_DENIED" % (len(allowed), len(refused)))

    def test_environment_allow_list(self):
        """With a command allow-list, a job sets only the environment keys
        --allow-env names: LD_PRELOAD, BASH_ENV, BASH_FUNC_* and the like
        would make an allowed program run other code."""
        for i, key in enumerate(["LD_PRELOAD", "BASH_ENV", "BASH_FUNC_echo%%", "PYTHONPATH",
                                 "NODE_OPTIONS", "JOB", "job_x"]):
            job = pb.Job(id="env-refused-%d" % i, trigger=far_date(), target=pb.Target(
                command=pb.CommandTarget(argv=["/bin/true"], env={key: "x"})))
            with self.assertRaises(grpc.RpcError, msg=key) as cm:
                self.d.sched.AddJob(pb.AddJobRequest(job=job), timeout=T)
            self.assertEqual(cm.exception.code(), C.PERMISSION_DENIED, key)
            self.assertIn("environment allow-list", cm.exception.details())
        ev = run_job(self.d, "env-allowed", ["/usr/bin/env"], env={"JOB_OTHER": "1", "PATH": "/bin"})
        self.assertEqual(ev.type, EXECUTED, ev.outcome.error)
        self.assertIn(b"JOB_OTHER=1", ev.outcome.stdout_tail)

    def test_checked_when_run(self):
        t = self.tmp
        # The job's own PATH finds another `true`: refused at run time.
        ev = run_job(self.d, "path-override", ["true"], env={"PATH": t + "/evil"})
        self.assertEqual(ev.type, ERROR)
        self.assertEqual(ev.outcome.status, pb.RUN_STATUS_START_FAILED)
        self.assertIn("allow-list", ev.outcome.error)
        self.assertFalse(os.path.exists(t + "/marks/path-ran"))
        # An allowed file swapped for a link to another program after the job was added.
        self.add("swapped", [t + "/allowed/swap.sh"], paused=True)
        self.assertEqual(run_now(self.d, "swapped").outcome.stdout_tail, b"swap\n")
        os.unlink(t + "/allowed/swap.sh")
        os.symlink("/usr/bin/id", t + "/allowed/swap.sh")
        ev = run_now(self.d, "swapped")
        self.assertEqual(ev.outcome.status, pb.RUN_STATUS_START_FAILED)
        self.assertIn("allow-list", ev.outcome.error)
        self.assertEqual(ev.outcome.stdout_tail, b"")

    def test_no_shell(self):
        t = self.tmp + "/marks"
        args = ["$HOME;touch %s/m1" % t, "`touch %s/m2`" % t, "$(touch %s/m3)" % t, "|", "touch", t + "/m4",
                "&&", "touch", t + "/m5", ">", t + "/m6", "*", "~", "\\n", "'q'", '"q"']
        ev = run_job(self.d, "no-shell", ["/bin/echo"] + args)
        self.assertEqual(ev.type, EXECUTED, ev.outcome.error)
        self.assertEqual(ev.outcome.stdout_tail.decode(), " ".join(args) + "\n")
        for m in ("m1", "m2", "m3", "m4", "m5", "m6"):
            self.assertFalse(os.path.exists(os.path.join(t, m)), m)
        # A shell runs when argv asks for one (and the allow-list has it).
        ev = run_job(self.d, "with-shell", ["/bin/sh", "-c", "echo shell-ran > %s/m7; echo $((6*7))" % t])
        self.assertEqual(ev.type, EXECUTED, ev.outcome.error)
        self.assertEqual(ev.outcome.stdout_tail, b"42\n")
        with open(os.path.join(t, "m7")) as f:
            self.assertEqual(f.read(), "shell-ran\n")

    def test_minimal_environment(self):
        ev = run_job(self.d, "env", ["/usr/bin/env"], env={"JOB_VAR": "x y"})
        self.assertEqual(ev.type, EXECUTED, ev.outcome.error)
        env = dict(line.split("=", 1) for line in ev.outcome.stdout_tail.decode().splitlines())
        self.assertNotIn("APSD_TEST_SECRET", env)  # the daemon's environment is not passed on
        self.assertNotIn("LD_PRELOAD", env)
        self.assertEqual(env.get("JOB_VAR"), "x y")
        self.assertIn("PATH", env)
        print("job environment: %s" % sorted(env))

    def test_no_inherited_descriptors(self):
        """The child has stdin, stdout and stderr only (ls adds the one it
        lists /proc/self/fd with): no listening socket, no LMDB file."""
        ev = run_job(self.d, "fds", ["/bin/ls", "-l", "/proc/self/fd/"])
        self.assertEqual(ev.type, EXECUTED, ev.outcome.error)
        lines = [ln for ln in ev.outcome.stdout_tail.decode().splitlines() if "->" in ln]
        fds = {ln.split("->")[0].split()[-1]: ln.split("->")[1].strip() for ln in lines}
        self.assertLessEqual(set(fds), {"0", "1", "2", "3"}, fds)
        self.assertEqual(fds.get("0"), "/dev/null")
        for fd, target in fds.items():
            self.assertNotIn("socket", target, fd)
            self.assertNotIn(".mdb", target, fd)


class StoredBeforeAllowListTest(unittest.TestCase):
    def test_job_stored_before_the_allow_list(self):
        """A job added while there was no allow-list does not run once the
        daemon restarts with one that excludes it."""
        tmp = tempfile.mkdtemp(prefix="apsd-sec-cmd2-")
        d = None
        try:
            d = Daemon(tmp).start()
            d.sched.AddJob(pb.AddJobRequest(job=cmd_job("old", argv=["/usr/bin/id"], paused=True)), timeout=T)
            self.assertEqual(d.stop(), 0, d.log_text())
            d = Daemon(tmp, ["--allow-command", "/bin/true"]).start()
            ev = run_now(d, "old")
            self.assertEqual(ev.type, ERROR)
            self.assertEqual(ev.outcome.status, pb.RUN_STATUS_START_FAILED)
            self.assertIn("allow-list", ev.outcome.error)
            self.assertEqual(ev.outcome.stdout_tail, b"")
            self.assertEqual(d.stop(), 0, d.log_text())
            d = None
        finally:
            if d is not None:
                d.stop()
            shutil.rmtree(tmp, ignore_errors=True)


@unittest.skipUnless(os.geteuid() == 0, "run-as needs root")
class RunAsTest(unittest.TestCase):
    def test_run_as_nobody(self):
        tmp = tempfile.mkdtemp(prefix="apsd-sec-runas-")
        d = None
        try:
            d = Daemon(tmp, ["--run-as", "nobody"]).start()
            out = {}
            for name, argv in (("uid", ["/usr/bin/id", "-u"]), ("gid", ["/usr/bin/id", "-g"]),
                               ("groups", ["/usr/bin/id", "-G"]),
                               ("caps", ["/bin/grep", "^Cap[EPB]", "/proc/self/status"])):
                ev = run_job(d, "runas-" + name, argv, cwd="/")
                self.assertEqual(ev.type, EXECUTED, ev.outcome.error)
                out[name] = ev.outcome.stdout_tail.decode()
            self.assertEqual(out["uid"], "65534\n")
            self.assertEqual(out["gid"], "65534\n")
            self.assertEqual(out["groups"], "65534\n")  # root's supplementary groups dropped
            caps = dict(line.split(":\t") for line in out["caps"].splitlines())
            self.assertEqual(int(caps["CapEff"], 16), 0)
            self.assertEqual(int(caps["CapPrm"], 16), 0)
            # The daemon's files are out of reach.
            ev = run_job(d, "runas-write", ["/usr/bin/touch", os.path.join(d.store, "pwned")], cwd="/")
            self.assertEqual(ev.type, ERROR)
            self.assertFalse(os.path.exists(os.path.join(d.store, "pwned")))
            ev = run_job(d, "runas-read", ["/bin/cat", os.path.join(d.store, "data.mdb")], cwd="/")
            self.assertEqual(ev.type, ERROR)
            self.assertEqual(ev.outcome.stdout_tail, b"")
            # The working directory is entered as the run-as user: one it
            # cannot enter fails (entered as root, the command ran in it).
            secret = tempfile.mkdtemp(prefix="apsd-sec-cwd-")
            os.makedirs(os.path.join(secret, "sub"))
            os.chmod(secret, 0o700)
            os.chmod(os.path.join(secret, "sub"), 0o755)
            try:
                ev = run_job(d, "runas-cwd", ["/bin/pwd"], cwd=os.path.join(secret, "sub"))
                self.assertEqual(ev.type, ERROR)
                self.assertEqual(ev.outcome.status, pb.RUN_STATUS_START_FAILED)
                self.assertIn("cwd", ev.outcome.error)
            finally:
                shutil.rmtree(secret, ignore_errors=True)
            print("run-as nobody: uid %s, gid %s, groups %s, no capabilities; the store is unreadable" % (
                out["uid"].strip(), out["gid"].strip(), out["groups"].strip()))
            self.assertEqual(d.stop(), 0, d.log_text())
            d = None
        finally:
            if d is not None:
                d.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_unknown_user_and_not_root(self):
        tmp = tempfile.mkdtemp(prefix="apsd-sec-runas2-")
        try:
            out = subprocess.run([APSD, "--listen", "127.0.0.1:1", "--data-dir", tmp + "/s", "--run-as",
                                  "no-such-user-xyz"], capture_output=True, text=True, timeout=30)
            self.assertNotEqual(out.returncode, 0)
            self.assertIn("no-such-user-xyz", out.stderr)
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                return
            # A daemon that is not root cannot switch users: asked to, it
            # refuses to start rather than run jobs as itself. (As nobody,
            # `--run-as nobody` is no switch and starts.)
            os.chmod(tmp, 0o755)
            exe = os.path.join(tmp, "apsd")
            shutil.copy(APSD, exe)
            os.chmod(exe, 0o755)
            data = os.path.join(tmp, "data")
            os.makedirs(data)
            os.chmod(data, stat.S_IRWXU | stat.S_IRWXG | stat.S_IRWXO)
            out = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", exe, "--listen",
                                  "127.0.0.1:%d" % free_port(), "--data-dir", data + "/s", "--run-as", "root"],
                                 capture_output=True, text=True, timeout=30)
            self.assertNotEqual(out.returncode, 0, out.stderr)
            self.assertIn("not root", out.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Security tests of apsd's front door: bearer tokens and their roles, the
constant-time token compare inside the real daemon, TLS and mTLS, and the
refusal of non-loopback listeners without TLS and tokens.

tests/e2e/test_service.py checks one token and one TLS setup; this suite is
the systematic one: every method of both services against no token, a read
token and a write token; malformed Authorization headers; mTLS with and
without a client certificate and with one from another CA; a table of
listen addresses that must be refused.

Run: bazel test //tests/security:auth_tls_test, or from the tree root
/usr/bin/python3 tests/security/test_auth_tls.py (after bazel build
//service:apsd //service:apsd-token //proto:apsd_py //tests/security:ctcount.so).
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (APSD, APSD_TOKEN, SANITIZED, Daemon, T, cmd_job, find_runfile, free_port, grpc,  # noqa: E402
                     pb, raw_call, scheduler_pb2_grpc, wpb)

C = grpc.StatusCode
READ_METHODS = {"GetJob", "ListJobs", "PreviewTrigger", "GetScheduler", "SubscribeEvents"}


def all_methods():
    """(path, server_streaming, needs write) for every apsd.v1 method."""
    out = []
    for mod, svc in ((pb, "Scheduler"), (wpb, "Workers")):
        sd = mod.DESCRIPTOR.services_by_name[svc]
        for m in sd.methods:
            out.append(("/%s/%s" % (sd.full_name, m.name), m.server_streaming,
                        not (svc == "Scheduler" and m.name in READ_METHODS)))
    return out


def auth_code(channel, path, stream, metadata):
    """The status of an empty request: OK, or what the daemon answered.
    A stream that stays open (no item within 2 s) passed authentication."""
    code, details, _ = raw_call(channel, path, b"", timeout=2 if stream else T, metadata=metadata, stream=stream)
    if stream and code == C.DEADLINE_EXCEEDED:
        return C.OK, ""
    return code, details


def ctcount_lib():
    for rel in ("tests/security/ctcount.so",):
        try:
            return find_runfile(rel)
        except FileNotFoundError:
            p = os.path.join(os.getcwd(), "bazel-bin", rel)
            if os.path.exists(p):
                return p
    return None


def new_token(role):
    out = subprocess.run([APSD_TOKEN, role], capture_output=True, text=True, timeout=30, check=True)
    token, line = out.stdout.splitlines()
    return token, line


class TokenTest(unittest.TestCase):
    """One daemon with a token file (a read token, a write token from
    apsd-token, and a 1016-character write token) and, when the library is
    built, ctcount.so preloaded to count CRYPTO_memcmp calls."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="apsd-sec-auth-")
        cls.read_tok, read_line = new_token("read")
        cls.write_tok, write_line = new_token("write")
        cls.long_tok = "L" * 1016  # "Bearer " + it = 1023 bytes
        cls.tokens = os.path.join(cls.tmp, "tokens")
        with open(cls.tokens, "w") as f:
            f.write("# test tokens\n%s\n%s\nwrite %s\n" % (
                read_line, write_line, hashlib.sha256(cls.long_tok.encode()).hexdigest()))
        cls.n_tokens = 3
        env = dict(os.environ)
        cls.count_file = os.path.join(cls.tmp, "ctcount")
        lib = ctcount_lib()
        cls.counting = lib is not None
        if cls.counting:
            env["LD_PRELOAD"] = lib
            env["APSD_CT_COUNT_FILE"] = cls.count_file
            if SANITIZED:  # the preload comes before the ASan runtime
                env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0").lstrip(":")
        cls.sock = os.path.join(cls.tmp, "apsd.sock")
        cls.d = Daemon(cls.tmp, ["--token-file", cls.tokens, "--listen", "unix:" + cls.sock], env=env).start()
        cls.read = (("authorization", "Bearer " + cls.read_tok),)
        cls.write = (("authorization", "Bearer " + cls.write_tok),)

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        log = cls.d.log_text()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if rc != 0:
            raise AssertionError("apsd exited with %r:\n%s" % (rc, log))

    def test_every_method_needs_a_token(self):
        methods = all_methods()
        self.assertEqual(len(methods), 19)
        for path, stream, _ in methods + [("/grpc.health.v1.Health/Check", False, False)]:
            code, details = auth_code(self.d.channel, path, stream, None)
            self.assertEqual(code, C.UNAUTHENTICATED, path)
            self.assertIn("bearer token", details)
        # Nothing is revealed about unknown methods either way.
        code, _ = auth_code(self.d.channel, "/apsd.v1.Scheduler/Nope", False, None)
        self.assertEqual(code, C.UNIMPLEMENTED)

    def test_reflection_and_unix_socket_need_tokens(self):
        """Reflection (a bidi stream) is checked like the rest, and a unix:
        listener, served in plaintext because it is local, needs tokens too."""
        refl = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        list_services = b"\x3a\x00"  # ServerReflectionRequest{list_services: ""}

        def reflect(ch, md):
            it = ch.stream_stream(refl)(iter([list_services]), timeout=T, metadata=md)
            try:
                return C.OK, next(it)
            except grpc.RpcError as e:
                return e.code(), None
            finally:
                it.cancel()

        self.assertEqual(reflect(self.d.channel, None)[0], C.UNAUTHENTICATED)
        code, resp = reflect(self.d.channel, self.read)
        self.assertEqual(code, C.OK)
        self.assertIn(b"apsd.v1.Scheduler", resp)
        ch = grpc.insecure_channel("unix:" + self.sock)
        try:
            for md, want in ((None, C.UNAUTHENTICATED), (self.read, C.OK)):
                code, _ = auth_code(ch, "/apsd.v1.Scheduler/GetScheduler", False, md)
                self.assertEqual(code, want)
            code, _ = auth_code(ch, "/apsd.v1.Scheduler/AddJob", False, self.read)
            self.assertEqual(code, C.PERMISSION_DENIED)
        finally:
            ch.close()

    def test_read_token_cannot_write(self):
        n_write = 0
        for path, stream, write in all_methods():
            code, details = auth_code(self.d.channel, path, stream, self.read)
            if write:
                n_write += 1
                self.assertEqual(code, C.PERMISSION_DENIED, path)
                self.assertIn("write role", details)
            else:
                self.assertNotIn(code, (C.UNAUTHENTICATED, C.PERMISSION_DENIED), (path, details))
        self.assertEqual(n_write, 14)
        # The write was refused, not done: nothing was added.
        with self.assertRaises(grpc.RpcError) as cm:
            self.d.sched.AddJob(pb.AddJobRequest(job=cmd_job("read-add")), timeout=T, metadata=self.read)
        self.assertEqual(cm.exception.code(), C.PERMISSION_DENIED)
        with self.assertRaises(grpc.RpcError) as cm:
            self.d.sched.GetJob(pb.GetJobRequest(job_id="read-add"), timeout=T, metadata=self.read)
        self.assertEqual(cm.exception.code(), C.NOT_FOUND)

    def test_write_token_passes_everywhere(self):
        for path, stream, _ in all_methods():
            if path.endswith(("/RemoveAllJobs", "/PauseScheduler")):
                continue  # would disturb the other tests of this daemon
            code, details = auth_code(self.d.channel, path, stream, self.write)
            self.assertNotIn(code, (C.UNAUTHENTICATED, C.PERMISSION_DENIED), (path, details))
        j = self.d.sched.AddJob(pb.AddJobRequest(job=cmd_job("write-add")), timeout=T, metadata=self.write)
        self.assertEqual(j.id, "write-add")
        self.d.sched.RemoveJob(pb.RemoveJobRequest(job_id="write-add"), timeout=T, metadata=self.write)

    def test_malformed_authorization(self):
        w = self.write_tok
        bad = [
            ("authorization", "Bearer"),
            ("authorization", "Bearer "),
            ("authorization", "Basic " + w),
            ("authorization", "Token " + w),
            ("authorization", "Bearer" + w),
            ("authorization", "Bearer " + w[:-1]),           # a prefix of the token
            ("authorization", "Bearer " + w + "A"),          # one character more
            ("authorization", "Bearer " + w + " x"),
            ("authorization", "Bearer " + w.swapcase()),
            ("authorization", "Bearer " + "A" * 2000),       # longer than any token
            ("authorization", "Bearer " + self.read_tok + "," + w),
            ("authorization", "Bearer " + hashlib.sha256(w.encode()).hexdigest()),  # the stored hash
            ("x-authorization", "Bearer " + w),
            ("bearer", w),
        ]
        for key, value in bad:
            code, _ = auth_code(self.d.channel, "/apsd.v1.Scheduler/GetScheduler", False, ((key, value),))
            self.assertEqual(code, C.UNAUTHENTICATED, (key, value[:80]))
        # The scheme is case-insensitive and several spaces are fine (RFC 7235).
        for value in ("bearer " + w, "BEARER   " + w):
            code, _ = auth_code(self.d.channel, "/apsd.v1.Scheduler/AddJob", False, (("authorization", value),))
            self.assertEqual(code, C.INVALID_ARGUMENT, value)  # past the check: an empty AddJob

    def test_long_header_is_not_cut(self):
        """Regression: the daemon copied the header into 1024 bytes and cut
        the rest, so `Bearer <1016-char token><anything>` passed as the
        1016-char token. Now a header too long to hold a token is refused
        whole; the 1016-char token itself (1023 bytes with `Bearer `) works."""
        ok = (("authorization", "Bearer " + self.long_tok),)
        self.assertEqual(auth_code(self.d.channel, "/apsd.v1.Scheduler/GetScheduler", False, ok)[0], C.OK)
        for extra in ("b" * 40, "=" * 3, "!" * 5000):
            md = (("authorization", "Bearer " + self.long_tok + extra),)
            self.assertEqual(auth_code(self.d.channel, "/apsd.v1.Scheduler/GetScheduler", False, md)[0],
                             C.UNAUTHENTICATED, extra[:10])

    def count(self):
        try:
            with open(self.count_file) as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0

    def test_constant_time_compare_called(self):
        """Every authenticated call hashes the presented token and compares
        the hash with every stored one through OpenSSL's CRYPTO_memcmp
        (interposed by ctcount.so): the same number of compares whether the
        token is right, wrong, or matches another role. A malformed header
        is refused before any compare."""
        if not self.counting:
            self.skipTest("ctcount.so not built")
        w = self.write_tok
        cases = [
            ("right write token", "Bearer " + w, C.OK),
            ("read token on a read method", "Bearer " + self.read_tok, C.OK),
            ("wrong token", "Bearer " + "x" * 43, C.UNAUTHENTICATED),
            ("the token minus its last character", "Bearer " + w[:-1], C.UNAUTHENTICATED),
            ("the token with its last character changed", "Bearer " + w[:-1] + ("A" if w[-1] != "A" else "B"),
             C.UNAUTHENTICATED),
        ]
        figures = []
        for name, value, want in cases:
            before = self.count()
            code, _ = auth_code(self.d.channel, "/apsd.v1.Scheduler/GetScheduler", False,
                                (("authorization", value),))
            self.assertEqual(code, want, name)
            n = self.count() - before
            figures.append("%s: %d" % (name, n))
            self.assertEqual(n, self.n_tokens, name)
        before = self.count()
        auth_code(self.d.channel, "/apsd.v1.Scheduler/GetScheduler", False, (("authorization", "Basic abc"),))
        self.assertEqual(self.count() - before, 0)
        print("constant-time compare: CRYPTO_memcmp calls per call with %d stored tokens: %s" % (
            self.n_tokens, "; ".join(figures)))

    def test_token_file_fails_closed(self):
        """A token file that loads no token stops the daemon: it never
        starts without authentication because of a bad file."""
        cases = {
            "missing": None,
            "comments only": "# nothing\n\n",
            "bad hash": "write abc\n",
            "unknown role": "admin %s\n" % ("0" * 64),
            "token instead of hash": "write %s\n" % self.write_tok,
        }
        for name, content in cases.items():
            path = os.path.join(self.tmp, "tf-" + name.replace(" ", "-"))
            if content is not None:
                with open(path, "w") as f:
                    f.write(content)
            out = subprocess.run([APSD, "--listen", "127.0.0.1:%d" % free_port(), "--data-dir",
                                  os.path.join(self.tmp, "tf-store"), "--token-file", path],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2, (name, out.stderr))
            self.assertIn("--token-file", out.stderr, name)
            self.assertNotIn(self.write_tok, out.stderr, name)  # a pasted token is not echoed


# ---- TLS ---------------------------------------------------------------------------------

def openssl(*args, cwd):
    out = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), out.stderr))


def make_pki(d):
    """A CA, a server certificate for IP 127.0.0.1, a client certificate of
    the CA, and a rogue CA with its own client certificate (EC P-256)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", *ec, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2",
                "-subj", "/CN=apsd test " + ca, cwd=d)
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("rogue-client", "rogue-ca", "client.ext")):
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", ext, cwd=d)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


@unittest.skipIf(shutil.which("openssl") is None, "no openssl")
class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="apsd-sec-tls-")
        cls.pki = os.path.join(cls.tmp, "pki")
        os.makedirs(cls.pki)
        make_pki(cls.pki)
        cls.token, line = new_token("write")
        cls.tokens = os.path.join(cls.tmp, "tokens")
        with open(cls.tokens, "w") as f:
            f.write(line + "\n")
        cls.md = (("authorization", "Bearer " + cls.token),)
        p = lambda n: os.path.join(cls.pki, n)  # noqa: E731
        cls.tls_flags = ["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--token-file", cls.tokens]
        cls.trusting = grpc.ssl_channel_credentials(root_certificates=read(cls.pki, "ca.pem"))
        cls.with_cert = grpc.ssl_channel_credentials(
            root_certificates=read(cls.pki, "ca.pem"), private_key=read(cls.pki, "client.key"),
            certificate_chain=read(cls.pki, "client.pem"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def daemon(self, name, extra, creds):
        data = os.path.join(self.tmp, name)
        os.makedirs(data)
        return Daemon(data, extra, creds=creds)

    def status(self, d, creds, metadata=None, timeout=5):
        """GetScheduler over a fresh channel: OK or the error code."""
        ch = d.channel_for(creds)
        try:
            scheduler_pb2_grpc.SchedulerStub(ch).GetScheduler(pb.GetSchedulerRequest(), timeout=timeout,
                                                             metadata=metadata)
            return C.OK
        except grpc.RpcError as e:
            return e.code()
        finally:
            ch.close()

    def test_tls(self):
        d = self.daemon("tls", self.tls_flags, self.trusting).start()
        try:
            self.assertEqual(self.status(d, self.trusting, self.md), C.OK)
            self.assertEqual(self.status(d, self.trusting), C.UNAUTHENTICATED)  # TLS does not replace tokens
            self.assertEqual(self.status(d, self.with_cert, self.md), C.OK)  # a client cert is not required
            self.assertEqual(self.status(d, None, self.md), C.UNAVAILABLE)  # plaintext is not served
            rogue = grpc.ssl_channel_credentials(root_certificates=read(self.pki, "rogue-ca.pem"))
            self.assertEqual(self.status(d, rogue, self.md), C.UNAVAILABLE)  # the client checks the server
        finally:
            self.assertEqual(d.stop(), 0, d.log_text())

    def test_mtls(self):
        flags = self.tls_flags + ["--tls-client-ca", os.path.join(self.pki, "ca.pem")]
        d = self.daemon("mtls", flags, self.with_cert).start()
        try:
            self.assertEqual(self.status(d, self.with_cert, self.md), C.OK)
            # Refused in the handshake: no certificate, or one of another CA.
            self.assertEqual(self.status(d, self.trusting, self.md), C.UNAVAILABLE)
            rogue = grpc.ssl_channel_credentials(
                root_certificates=read(self.pki, "ca.pem"), private_key=read(self.pki, "rogue-client.key"),
                certificate_chain=read(self.pki, "rogue-client.pem"))
            self.assertEqual(self.status(d, rogue, self.md), C.UNAVAILABLE)
            # The server's own certificate is no client certificate: no clientAuth usage.
            server_as_client = grpc.ssl_channel_credentials(
                root_certificates=read(self.pki, "ca.pem"), private_key=read(self.pki, "server.key"),
                certificate_chain=read(self.pki, "server.pem"))
            self.assertEqual(self.status(d, server_as_client, self.md), C.UNAVAILABLE)
            self.assertEqual(self.status(d, None, self.md), C.UNAVAILABLE)
            self.assertEqual(self.status(d, self.with_cert, self.md), C.OK)  # still serving
        finally:
            self.assertEqual(d.stop(), 0, d.log_text())

    def test_bad_tls_configuration_stops_the_daemon(self):
        p = lambda n: os.path.join(self.pki, n)  # noqa: E731
        cases = {
            "cert without key": ["--tls-cert", p("server.pem")],
            "key without cert": ["--tls-key", p("server.key")],
            "client CA without cert": ["--tls-client-ca", p("ca.pem")],
            "missing cert file": ["--tls-cert", p("nope.pem"), "--tls-key", p("server.key")],
            "key of another certificate": ["--tls-cert", p("server.pem"), "--tls-key", p("client.key")],
            "key file is a certificate": ["--tls-cert", p("server.pem"), "--tls-key", p("server.pem")],
        }
        for name, flags in cases.items():
            port = free_port()
            proc = subprocess.Popen([APSD, "--listen", "127.0.0.1:%d" % port, "--data-dir",
                                     os.path.join(self.tmp, "bad-" + name.replace(" ", "-"))] + flags,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=10)
                self.fail("%s: apsd kept running" % name)
            self.assertNotEqual(proc.returncode, 0, name)
            self.assertTrue(err.strip(), name)


# ---- listeners -----------------------------------------------------------------------------

class ListenTest(unittest.TestCase):
    """A listener others can reach needs TLS and tokens: apsd refuses to
    start (exit 2, before it binds anything) otherwise. Nothing here is
    ever exposed: a daemon that did not refuse is killed at once."""

    def run_refused(self, argv, name):
        proc = subprocess.Popen([APSD] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            self.fail("%s: apsd did not refuse %r (killed)" % (name, argv))
        self.assertEqual(proc.returncode, 2, (name, err))
        self.assertIn("refusing to listen", err, name)
        self.assertIn("--insecure-listen", err, name)
        return err

    def test_refused_addresses(self):
        tmp = tempfile.mkdtemp(prefix="apsd-sec-listen-")
        try:
            tokens = os.path.join(tmp, "tokens")
            with open(tokens, "w") as f:
                f.write(new_token("write")[1] + "\n")
            cert = os.path.join(tmp, "cert.pem")  # never read: the refusal comes first
            data = ["--data-dir", os.path.join(tmp, "store")]
            p = free_port()
            addrs = [
                "0.0.0.0:%d" % p, "[::]:%d" % p, ":%d" % p, "ipv4:0.0.0.0:%d" % p, "ipv6:[::]:%d" % p,
                "192.0.2.1:%d" % p, "[2001:db8::1]:%d" % p, "example.invalid:%d" % p,
                # Regressions: host names that start like a loopback address
                # passed the old prefix check, and gRPC resolves host names.
                "127.0.0.1.example.invalid:%d" % p,
                "127.attacker.invalid:%d" % p,
                # Address lists (`ipv4:a,b`), refused whatever gRPC makes of them.
                "ipv4:127.0.0.1:%d,0.0.0.0:%d" % (p, p + 1),
                "ipv6:[::1]:%d,[::]:%d" % (p, p + 1),
                "localhost:%d,0.0.0.0:%d" % (p, p + 1),
            ]
            for addr in addrs:
                self.run_refused(["--listen", addr] + data, addr)
            # One reachable listener among loopback ones is enough to refuse.
            self.run_refused(["--listen", "127.0.0.1:%d" % p, "--listen", "0.0.0.0:%d" % (p + 1)] + data, "two")
            # Tokens without TLS, or TLS without tokens, are not enough.
            self.run_refused(["--listen", "0.0.0.0:%d" % p, "--token-file", tokens] + data, "tokens only")
            self.run_refused(["--listen", "0.0.0.0:%d" % p, "--tls-cert", cert, "--tls-key", cert] + data,
                             "TLS only")
            # The same from the configuration file.
            conf = os.path.join(tmp, "apsd.ini")
            with open(conf, "w") as f:
                f.write("[server]\nlisten = 127.0.0.1:%d, 0.0.0.0:%d\n" % (p, p + 1))
            self.run_refused(["--config", conf] + data, "config")
            print("listen: %d non-loopback listener configurations refused" % (len(addrs) + 4))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_loopback_forms_start(self):
        """The loopback forms still start (and are stopped at once)."""
        tmp = tempfile.mkdtemp(prefix="apsd-sec-lo-")
        try:
            for form in ("127.0.0.1:%d", "127.0.0.2:%d", "localhost:%d", "[::1]:%d"):
                port = free_port()
                addr = form % port
                log = os.path.join(tmp, "log")
                with open(log, "wb") as lf:
                    proc = subprocess.Popen([APSD, "--listen", addr, "--data-dir", os.path.join(tmp, "s")],
                                            stdout=lf, stderr=lf)
                try:
                    end = time.time() + 15
                    started = False
                    while time.time() < end and proc.poll() is None:
                        with open(log, "rb") as lf:
                            if b"apsd started" in lf.read():
                                started = True
                                break
                        time.sleep(0.05)
                finally:
                    if proc.poll() is None:
                        proc.terminate()
                    proc.wait(timeout=30)
                with open(log, "rb") as lf:
                    text = lf.read().decode("utf-8", "replace")
                if "[::1]" in addr and not started and "Address family not supported" in text:
                    continue  # no IPv6 on this machine
                self.assertTrue(started, (addr, text))
                self.assertNotIn("refusing", text)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)

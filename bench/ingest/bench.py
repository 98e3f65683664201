"""The passes of scripts/bench-ingest (run that script; it builds and installs what this needs).

Starts the servers, checks that each one accepts a correctly signed delivery and refuses a
wrongly signed one, runs wrk against them in interleaved passes, reads CPU time and memory
from /proc, and prints Markdown tables of medians and ratios. Raw results go to
WORK/results.json.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

SECRET = b"a webhook secret of the usual length"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAYLOADS = [("pull_request.opened", "pull_request", "opened"), ("issues.labeled", "issues", "labeled")]
NAMES = {"bot": "countersign bot", "probot": "Probot 14", "floor": "axum floor"}


def env_int(name, default):
    return int(os.environ.get(name, default))


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def example(index, event, action):
    """The largest example, compact and with sorted keys, as the webhooks bench serialises it."""
    bodies = [
        json.dumps(e, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
        for entry in index
        if entry["name"] == event
        for e in entry["examples"]
        if e.get("action") == action
    ]
    return max(bodies, key=len)


def sign(body, secret=SECRET):
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def post(port, path, event, body, signature, delivery):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=body, headers={
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
    })
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return response.status, text


def wait_for(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up within {timeout} s")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def threads(pid):
    return status_kib(pid, "Threads")


class Server:
    def __init__(self, name, argv, port, path, env=None, cwd=None, logfile=None, pinned=False):
        self.name, self.port, self.path = name, port, path
        if pinned:
            argv = ["taskset", "-c", "0"] + argv
        self.log = open(logfile, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid  # taskset execs the server: same pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def alive(self):
        return self.proc.poll() is None


def listening(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def bot_metric(port, name, labels=None):
    """Sum of the bot's metric `name` (counters carry a `_total` suffix) over matching series."""
    _, text = get(port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        if labels and not all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            continue
        total += float(m.group(3))
    return total


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.duration = env_int("BENCH_DURATION", 5)
        self.passes = env_int("BENCH_PASSES", 3)
        self.warmup = env_int("BENCH_WARMUP", 2)
        self.servers_wanted = os.environ.get("BENCH_SERVERS", "bot probot floor").split()
        self.modes = os.environ.get("BENCH_MODES", "pinned unpinned").split()
        self.connections = {"pinned": env_int("BENCH_CONNECTIONS", 8),
                            "unpinned": env_int("BENCH_CONNECTIONS_UNPINNED", 32)}
        self.run_id = 0
        self.results = []
        self.memory = []
        self.bot_mix = {}
        self.work_results = []
        self.work_gates = 0
        with open(args.examples) as f:
            index = json.load(f)
        self.payloads = []
        for label, event, action in PAYLOADS:
            body = example(index, event, action)
            path = os.path.join(self.work, f"{label}.json")
            with open(path, "wb") as f:
                f.write(body)
            self.payloads.append({"label": label, "event": event, "body": body, "file": path,
                                  "signature": sign(body)})
        self.secret_file = os.path.join(self.work, "webhook-secret")
        with open(self.secret_file, "wb") as f:
            f.write(SECRET)
        self.key_file = os.path.join(self.work, "github-app.pem")
        subprocess.run(["openssl", "genrsa", "-out", self.key_file, "2048"], check=True,
                       stderr=subprocess.DEVNULL)

    def start_kubernetes(self):
        kube = os.path.join(self.work, "kube")
        self.sandbox = subprocess.Popen(
            [self.args.sandbox, "serve", "--dir", kube], stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.work, "sandbox.log"), "wb"), start_new_session=True)
        line = self.sandbox.stdout.readline().decode()
        if "ready" not in line:
            raise SystemExit(f"countersign-sandbox did not start: {line!r}")
        self.kubeconfig = os.path.join(kube, "kubeconfig")

    def start(self, name, mode):
        pinned = mode == "pinned"
        logfile = os.path.join(self.work, f"{name}-{mode}.log")
        port = free_port()
        if name == "bot":
            internal = free_port()
            argv = [self.args.countersign, "bot",
                    "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{internal}",
                    "--webhook-secret-file", self.secret_file,
                    "--github-app-id", "1", "--github-app-private-key-file", self.key_file,
                    "--github-api-url", "http://127.0.0.1:9", "--bot-login", "bench[bot]",
                    "--kubeconfig", self.kubeconfig, "--allowed-repositories", "*=*/*"]
            argv += os.environ.get("BENCH_BOT_ARGS", "").split()
            env = dict(os.environ)
            server = Server(name, argv, port, "/webhook", env=env, logfile=logfile, pinned=pinned)
            server.internal = internal
            wait_for("the bot", lambda: get(internal, "/readyz")[0] == 200)
        elif name == "probot":
            env = dict(os.environ, APP_ID="1", PRIVATE_KEY_PATH=self.key_file,
                       WEBHOOK_SECRET=SECRET.decode(), HOST="127.0.0.1", PORT=str(port),
                       NODE_ENV="production")
            env.pop("LOG_LEVEL", None)
            server = Server(name, ["node", "index.js"], port, "/api/github/webhooks", env=env,
                            cwd=self.args.probot, logfile=logfile, pinned=pinned)
            wait_for("Probot", lambda: listening(port))
        else:
            server = Server(name, [self.args.floor, f"127.0.0.1:{port}", self.secret_file], port,
                            "/webhook", logfile=logfile, pinned=pinned)
            wait_for("the floor", lambda: listening(port))
        server.idle_rss = status_kib(server.pid, "VmRSS")
        self.check(server)
        return server

    def check(self, server):
        """A valid run needs a server that verifies: good signature accepted, bad refused."""
        for p in self.payloads:
            good = post(server.port, server.path, p["event"], p["body"], p["signature"],
                        f"check-good-{server.name}-{p['label']}")
            bad = post(server.port, server.path, p["event"], p["body"],
                       sign(p["body"], b"not the secret"), f"check-bad-{server.name}-{p['label']}")
            if not (200 <= good < 300 and 400 <= bad < 500):
                raise SystemExit(f"{server.name}: signed {p['label']} answered {good}, "
                                 f"wrongly signed {bad}; expected 2xx and 4xx")

    def wrk(self, server, payload, mode, seconds):
        self.run_id += 1
        argv = ["wrk", "--latency", "-d", f"{seconds}s", "-c", str(self.connections[mode]),
                "-t", "1" if mode == "pinned" else "2", "-s", self.args.lua,
                f"http://127.0.0.1:{server.port}", "--", payload["file"], payload["event"],
                payload["signature"], str(self.run_id), server.path]
        if mode == "pinned":
            argv = ["taskset", "-c", "1"] + argv
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
        if not m:
            raise SystemExit(f"wrk printed no result:\n{out}")
        return json.loads(m.group(1))

    def drain(self, server):
        if server.name == "bot":
            wait_for("the bot's queue to drain",
                     lambda: bot_metric(server.internal, "countersign_bot_deliveries_queued") == 0, timeout=120)

    def measure(self, server, payload, mode, index):
        self.drain(server)
        before = cpu_ticks(server.pid)
        result = self.wrk(server, payload, mode, self.duration)
        self.drain(server)
        after = cpu_ticks(server.pid)
        if not server.alive():
            raise SystemExit(f"{server.name} exited during a pass")
        result.update(server=server.name, payload=payload["label"], mode=mode, index=index,
                      cpu_s=(after - before) / CLK_TCK)
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        result["cpu_us_per_req"] = result["cpu_s"] * 1e6 / max(result["requests"], 1)
        bad = result["status"] + result["connect"] + result["read"] + result["write"] \
            + result["timeout"]
        if bad:
            raise SystemExit(f"invalid pass: {server.name} {payload['label']} {mode}: "
                             f"{result['status']} non-2xx answers, socket errors {result}")
        self.results.append(result)
        log(f"  {mode:8} {payload['label']:20} {server.name:6} pass {index}: "
            f"{result['rps']:9.0f} req/s  p50 {result['p50_us'] / 1000:6.2f} ms  "
            f"p99 {result['p99_us'] / 1000:6.2f} ms  CPU {result['cpu_us_per_req']:6.1f} µs/req")

    def run_mode(self, mode):
        log(f"==> {mode}: starting {', '.join(self.servers_wanted)}")
        servers = [self.start(name, mode) for name in self.servers_wanted]
        try:
            bot = next((s for s in servers if s.name == "bot"), None)
            before = self.bot_outcomes(bot)
            for server in servers:
                for payload in self.payloads:
                    self.wrk(server, payload, mode, self.warmup)
            for index in range(1, self.passes + 1):
                for payload in self.payloads:
                    for server in servers:
                        self.measure(server, payload, mode, index)
            for server in servers:
                self.memory.append({
                    "server": server.name, "mode": mode, "idle_rss_kib": server.idle_rss,
                    "peak_rss_kib": status_kib(server.pid, "VmHWM"),
                    "rss_kib": status_kib(server.pid, "VmRSS"), "threads": threads(server.pid),
                    "anon_kib": status_kib(server.pid, "RssAnon"),
                    "file_kib": status_kib(server.pid, "RssFile"),
                })
            if bot:
                after = self.bot_outcomes(bot)
                mix = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
                log(f"  bot outcomes this mode: {mix}")
                if any(k.startswith("failed_") or (k.startswith("answered_") and k != "answered_queued")
                       for k in mix):
                    raise SystemExit("the bot answered something other than 202 queued, or its "
                                     "workers failed a delivery: invalid run")
                self.bot_mix[mode] = mix
        finally:
            for server in servers:
                server.stop()

    def pull_variants(self, count):
        """`count` pull_request.opened deliveries for pull requests 1..count of the payload's
        repository (each its own head commit), signed; returns the wrk manifest's path."""
        base = json.loads(self.payloads[0]["body"])
        lines = []
        for number in range(1, count + 1):
            body = json.loads(json.dumps(base))
            body["number"] = number
            body["pull_request"]["number"] = number
            body["pull_request"]["head"]["sha"] = hashlib.sha1(f"head {number}".encode()).hexdigest()
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
            path = os.path.join(self.work, f"pull-{count}-{number}.json")
            with open(path, "wb") as f:
                f.write(data)
            lines.append(f"{path}\t{sign(data)}")
        manifest = os.path.join(self.work, f"pulls-{count}.tsv")
        with open(manifest, "w") as f:
            f.write("\n".join(lines) + "\n")
        return manifest

    def kubectl(self, *args, stdin=None):
        done = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, *args], input=stdin,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def run_work(self):
        """The bot with real work: a Project manages the payload's repository, so every
        pull_request.opened delivery applies the pull request's ApprovalGate and records its
        head on it (Kubernetes reads and writes per delivery). Deliveries rotate over
        BENCH_WORK_PULLS pull requests (each count its own pass set) at each of
        BENCH_WORK_CONNECTIONS; per pass: answers by status, the rate the bot accepted, the
        rate its workers finished them (until its queue drained) and its peak RSS so far."""
        repo = json.loads(self.payloads[0]["body"])["repository"]
        owner, name = repo["owner"]["login"], repo["name"]
        # `apply` rather than `create namespace`: the fake apiserver speaks JSON only.
        self.kubectl("apply", "-f", "-", stdin=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}))
        self.kubectl("apply", "-n", "bench", "-f", "-", stdin=json.dumps({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": "bench"},
            "spec": {"repository": {"owner": owner, "name": name, "defaultBranch": "main"}}}))
        log(f"==> with real work: Project bench/bench manages {owner}/{name}")
        bot = self.start("bot", "work")
        try:
            probe = self.pull_variants(1)
            body_file, signature = open(probe).read().strip().split("\t")
            body = open(body_file, "rb").read()
            wait_for("the bot to see the Project", lambda: post(
                bot.port, bot.path, "pull_request", body, signature,
                f"probe-{time.monotonic_ns()}") == 202 and self.bot_outcomes(bot).get(
                "handled_gate_applied", 0) > 0)
            self.drain(bot)
            for pulls in [int(p) for p in os.environ.get("BENCH_WORK_PULLS", "1 256").split()]:
                manifest = self.pull_variants(pulls)
                for conns in [int(c) for c in
                              os.environ.get("BENCH_WORK_CONNECTIONS", "8 4000").split()]:
                    self.work_pass(bot, manifest, pulls, conns)
            gates = len(self.kubectl("get", "approvalgates", "-n", "bench", "-o", "name").split())
            log(f"  ApprovalGates in namespace bench: {gates}")
            self.work_gates = gates
        finally:
            bot.stop()

    def work_pass(self, bot, manifest, pulls, conns):
        self.drain(bot)
        before_handled = self.bot_outcomes(bot)
        before_cpu = cpu_ticks(bot.pid)
        self.run_id += 1
        argv = ["wrk", "--latency", "-d", f"{self.duration}s", "-c", str(conns), "-t", "2",
                "--timeout", "10s", "-s", self.args.work_lua, f"http://127.0.0.1:{bot.port}",
                "--", manifest, "pull_request", str(self.run_id), bot.path]
        started = time.monotonic()
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        sent = time.monotonic()
        m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
        if not m:
            raise SystemExit(f"wrk printed no result:\n{out}")
        result = json.loads(m.group(1))
        wait_for("the bot's queue to drain",
                 lambda: bot_metric(bot.internal, "countersign_bot_deliveries_queued") == 0,
                 timeout=600)
        drained = time.monotonic()
        after = self.bot_outcomes(bot)
        handled = sum(after[k] - before_handled.get(k, 0) for k in after if k.startswith("handled_"))
        failed = {k: after[k] - before_handled.get(k, 0) for k in after
                  if k.startswith("failed_") and after[k] != before_handled.get(k, 0)}
        if failed or result["other"] or result["connect"] or result["timeout"]:
            raise SystemExit(f"invalid work pass ({pulls} pull requests, {conns} connections): "
                             f"failures {failed}, result {result}")
        seconds = result["duration_us"] / 1e6
        result.update(pulls=pulls, conns=conns, handled=handled,
                      accepted_rps=result["accepted"] / seconds,
                      finished_rps=handled / (drained - started),
                      drain_s=drained - sent,
                      cpu_us_per_accepted=(cpu_ticks(bot.pid) - before_cpu) / CLK_TCK * 1e6
                      / max(result["accepted"], 1),
                      peak_rss_kib=status_kib(bot.pid, "VmHWM"))
        self.work_results.append(result)
        log(f"  work {pulls:4} pull requests {conns:5} conns: {result['accepted']} accepted "
            f"({result['accepted_rps']:.0f}/s), {result['refused']} answered 503, finished "
            f"{result['finished_rps']:.0f}/s (drained {result['drain_s']:.1f} s after wrk), "
            f"p99 {result['p99_us'] / 1000:.1f} ms, peak RSS {result['peak_rss_kib'] / 1024:.1f} MiB")

    def report_work(self):
        if not self.work_results:
            return
        print(f"### with real work: a Project manages the repository, nothing pinned, wrk 2 threads, "
              f"{self.duration} s per pass\n")
        print("| pull requests | connections | accepted (202) | answered 503 | accepted / s | "
              "finished / s | queue drained after wrk | p50 | p99 | CPU / accepted | peak RSS so far |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in self.work_results:
            print(f"| {r['pulls']} | {r['conns']} | {r['accepted']:,} | {r['refused']:,} | "
                  f"{r['accepted_rps']:,.0f} | {r['finished_rps']:,.0f} | {r['drain_s']:.1f} s | "
                  f"{r['p50_us'] / 1000:.2f} ms | {r['p99_us'] / 1000:.2f} ms | "
                  f"{r['cpu_us_per_accepted']:.0f} µs | {r['peak_rss_kib'] / 1024:.1f} MiB |")
        print(f"\nApprovalGates written: {self.work_gates}\n")

    def bot_outcomes(self, bot):
        """The bot's own counts: what the endpoint answered and what the workers did."""
        if bot is None:
            return {}
        _, text = get(bot.internal, "/metrics")
        counts = {}
        series = {"countersign_bot_webhook_deliveries_total": "answered_",
                  "countersign_bot_delivery_outcomes_total": "handled_",
                  "countersign_bot_delivery_failures_total": "failed_"}
        for line in text.splitlines():
            m = re.match(r"^(\w+)\{([^}]*)\} (\S+)", line)
            if not m or m.group(1) not in series:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            key = series[m.group(1)] + labels.get("outcome", labels.get("error", "?"))
            counts[key] = counts.get(key, 0) + float(m.group(3))
        return counts

    def report(self):
        def med(rows, key):
            return statistics.median(r[key] for r in rows)

        print(f"\nLoad average at the end: {open('/proc/loadavg').read().split()[:3]}")
        print(f"Passes: {self.passes} x {self.duration} s per server, payload and mode "
              f"(warm-up {self.warmup} s); medians.\n")
        for mode in self.modes:
            conns = self.connections[mode]
            where = ("server on core 0, wrk on core 1 (1 thread)" if mode == "pinned"
                     else "nothing pinned, wrk 2 threads")
            print(f"### {mode}: {where}, {conns} connections\n")
            print("| payload | server | req/s | p50 | p99 | CPU / request | non-2xx |")
            print("|---|---|---:|---:|---:|---:|---:|")
            ratios = []
            for p in self.payloads:
                med_by = {}
                for name in self.servers_wanted:
                    rows = [r for r in self.results if r["mode"] == mode and r["server"] == name
                            and r["payload"] == p["label"]]
                    if not rows:
                        continue
                    med_by[name] = {k: med(rows, k) for k in
                                    ["rps", "p50_us", "p99_us", "cpu_us_per_req"]}
                    m = med_by[name]
                    print(f"| {p['label']} | {NAMES[name]} | {m['rps']:,.0f} | "
                          f"{m['p50_us'] / 1000:.2f} ms | {m['p99_us'] / 1000:.2f} ms | "
                          f"{m['cpu_us_per_req']:.1f} µs | {sum(r['status'] for r in rows)} |")
                ratios.append((p["label"], med_by))
            print()
            print("| payload | bot / Probot req/s | bot / floor req/s | Probot / bot CPU per request |"
                  " bot / floor CPU per request |")
            print("|---|---:|---:|---:|---:|")
            for label, m in ratios:
                def ratio(a, b, key):
                    if a in m and b in m and m[b][key]:
                        return f"{m[a][key] / m[b][key]:.2f}x"
                    return "-"
                print(f"| {label} | {ratio('bot', 'probot', 'rps')} | {ratio('bot', 'floor', 'rps')} | "
                      f"{ratio('probot', 'bot', 'cpu_us_per_req')} | "
                      f"{ratio('bot', 'floor', 'cpu_us_per_req')} |")
            print()
        self.report_work()
        print("### memory (per mode: fresh servers; peak = VmHWM after all passes of the mode)\n")
        print("| mode | server | RSS after start | peak RSS | at the end: anonymous | "
              "file-backed | threads |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for m in self.memory:
            print(f"| {m['mode']} | {NAMES[m['server']]} | {m['idle_rss_kib'] / 1024:.1f} MiB | "
                  f"**{m['peak_rss_kib'] / 1024:.1f} MiB** | {m['anon_kib'] / 1024:.1f} MiB | "
                  f"{m['file_kib'] / 1024:.1f} MiB | {m['threads']} |")
        with open(os.path.join(self.work, "results.json"), "w") as f:
            json.dump({"passes": self.results, "memory": self.memory,
                       "bot_outcomes": self.bot_mix, "work": self.work_results}, f, indent=1)


def main():
    parser = argparse.ArgumentParser()
    for flag in ["work", "examples", "countersign", "sandbox", "floor", "probot", "lua", "work-lua"]:
        parser.add_argument(f"--{flag}", required=True)
    bench = Bench(parser.parse_args())
    log(f"payloads: " + ", ".join(f"{p['label']} {len(p['body']):,} bytes" for p in bench.payloads))
    log(f"load average at the start: {open('/proc/loadavg').read().split()[:3]}")
    with_work = "bot" in bench.servers_wanted and os.environ.get("BENCH_WORK", "1") == "1"
    if "bot" in bench.servers_wanted:
        bench.start_kubernetes()
    try:
        for mode in bench.modes:
            bench.run_mode(mode)
        if with_work:
            bench.run_work()
    finally:
        if "bot" in bench.servers_wanted:
            bench.sandbox.send_signal(signal.SIGTERM)
            bench.sandbox.wait(10)
    bench.report()


if __name__ == "__main__":
    main()

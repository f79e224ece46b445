"""Benchmark reaper-ctl's fan-out: `audit` to 1,000 agents on one RabbitMQ.

Starts N agents (default 200): each is a real Agent around a real Reaper
(libvirt's in-process test driver with an empty node, its own instance dir, state
DB and audit log; one SQLite Nova DB with a compute node per host) behind the
RPCServer that reaper.rpc.server.build_server makes (its dispatcher, access policy
and ReaperEndpoint), listening under its own host name. They run in --workers
processes, N/workers agents each, packed (--agent-connections shared, the
default; see PackedAgents): the agents of a process share one consumer
connection and --agent-threads threads instead of two broker connections and a
few threads each, which is what lets 1,000 fit a stock broker's sockets and two
CPUs. --agent-connections own runs whole production-like servers (small N only;
the run refuses to take more than half of the broker's free sockets).
--agent-pass recorded makes each agent answer every call with the report of a
real pass it ran at start: the fan-out's own cost without 1,000 passes on this
machine's CPUs. Then, in this process, it times what `reaper-ctl --all audit`
does after parsing its config: a fresh client (new broker connection and reply
queue), the concurrent calls, and the merged report (JSON and table), and prints
the time to the merged report (every run, best, median, worst), the CPU seconds
of the controller, the agents and the broker per run, and the agents' memory. A
first two untimed runs warm the agents up (a real agent has run its init_host pass
and its periodic ones before anyone calls it): each agent's first pass reads the whole
Nova view, its second is its first change check, which compiles that statement once in
the agent's engine; both are printed. Finally it runs the real console script in a subprocess
(--ctl-runs times: wall time incl. interpreter start-up and imports, peak RSS).

Queue depth, two ways, in untimed runs of their own after the timed ones (a sampler
running alongside a timed run cost the broker and the 2 CPUs more than the fan-out
itself: 1.5-2 s of a 1,000-agent run):
- One run with a sampler process doing passive queue_declare (AMQP, its
  own connection) on every queue of the run: the `reaper` topic queue, each
  agent's `reaper.<host>` queue and the client's reply queue, sweep after sweep,
  and keeps the peak. Why AMQP: a sweep is a few hundred round trips on an open
  connection (~0.1 s), while each rabbitmqctl starts an Erlang VM (~0.4 s of a
  CPU on this 2-core machine), which would miss most of a ~1 s run and slow it.
  But it only sees messages_ready (waiting for a consumer: the backlog the
  broker holds); messages pushed to a consumer and not yet acknowledged are not
  counted, and oslo.messaging's consumers take everything at once (no prefetch
  limit).
- So two more, untimed runs go with `rabbitmqctl list_queues name messages`
  (ready + unacknowledged) in a loop: coarse (a few samples), but it sees where
  messages pile up on the consumer side (the client's reply queue).

The broker is the test host's (tools/testhost.sh start); the run uses a vhost of
its own (rabbitmqctl add_vhost), deleted at the end.

    .venv/bin/python bench/bench_fanout.py                  # 200 agents, 4 workers
    .venv/bin/python bench/bench_fanout.py --agents 1000 --workers 4 --runs 5
    .venv/bin/python bench/bench_fanout.py --agents 1000 --agent-pass recorded
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TARGET_S = 5.0
WARM_UP_TIMEOUT_S = 120.0
PAUSE_S = 0.02          # between two sweeps of the queue-depth sampler
CTL_ENV = dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1",
               RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")


def host_name(i: int) -> str:
    return f"bench-cmp-{i:04d}"


def rabbitmqctl(*args: str) -> str:
    r = subprocess.run(["rabbitmqctl", "-q", *args], env=CTL_ENV, capture_output=True,
                       text=True, timeout=60)
    if r.returncode:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


# -- the agents (worker processes) ----------------------------------------------------

def agent_conf(root: str, url: str):
    from oslo_config import cfg

    from reaper.conf import reaper as conf_reaper
    from reaper.conf import rpc as conf_rpc

    path = os.path.join(root, "agent.conf")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            f.write(f"[DEFAULT]\ntransport_url = {url}\n[rpc]\npass_wait_timeout = 5\n")
        os.replace(path + ".tmp", path)
    conf = cfg.ConfigOpts()
    conf.register_opts(conf_reaper.agent_opts, group="reaper")
    conf.register_opts(conf_reaper.pass_opts, group="reaper")   # full_view_interval
    conf_rpc.register_opts(conf)
    conf(["--config-file", path], project="reaper-bench", default_config_files=[])
    return conf


class PackedAgents:
    """The agents of a worker process on one consumer connection and a few threads.

    A real agent's RPC server holds two broker connections (its listener's and a
    reply connection from its transport's pool), three queues and a listener
    thread plus executor threads. 1,000 of them need ~2,000 sockets, more than a
    stock broker allows (RabbitMQ with 1024 file descriptors takes ~830 sockets
    and breaks down, mnesia included, when they run out), and ~4,000 threads,
    which a 2-core machine spends its time switching between. So here each agent
    is the RPCServer that reaper.rpc.server.build_server makes (its
    RPCDispatcher, access policy and ReaperEndpoint around a real Agent and
    Reaper), fed by oslo.messaging's own RPC listener callback (ack, context,
    duplicate check) and answered by the server's own ``_process_incoming``
    (dispatch, reply over the driver's connection pool); what is shared is the
    consumer connection (one pump thread) and the threads that run the calls
    (one pool per process) instead of a listener thread and an executor each.
    """

    def __init__(self, transport, threads: int):
        from oslo_messaging._drivers import common as rpc_common

        self.driver = transport._driver
        self.conn = self.driver._get_connection(rpc_common.PURPOSE_LISTEN)
        self.pool = concurrent.futures.ThreadPoolExecutor(threads, "bench-agent")
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="bench-consumer-pump",
                                       daemon=True)

    def add(self, server) -> None:
        """Consume for one RPCServer (built, not started), as its listener would."""
        import oslo_messaging._drivers.amqpdriver as amqpdriver

        pool = self.pool

        class Listener(amqpdriver.RpcAMQPListener):
            def __call__(self, message):            # run by the pump thread
                super().__call__(message)
                while self.incoming:
                    pool.submit(server._process_incoming, [self.incoming.pop(0)])

        listener = Listener(self.driver, self.conn)
        target = server._target
        exchange = self.driver._get_exchange(target)
        self.conn.declare_topic_consumer(exchange_name=exchange, topic=target.topic,
                                         callback=listener)
        self.conn.declare_topic_consumer(exchange_name=exchange,
                                         topic=f"{target.topic}.{target.server}",
                                         callback=listener)
        self.conn.declare_fanout_consumer(target.topic, listener)

    def _pump(self) -> None:
        from oslo_messaging._drivers import common as rpc_common

        while not self.stop_event.is_set():
            try:
                self.conn.consume(timeout=1.0)
            except rpc_common.Timeout:
                pass

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.conn.stop_consuming()
        self.thread.join()
        self.pool.shutdown(wait=True)
        self.conn.close()


def worker(root: str, url: str, db_url: str, hosts: list[str], threads: int,
           recorded_pass: bool = False) -> int:
    """Run one RPC server per host until stdin closes; ``threads`` > 0: packed on one
    transport, one consumer connection and that many threads (see PackedAgents).
    ``recorded_pass``: each agent runs one real pass at start, and answers every
    later pass call with that pass's report (the endpoint, the Agent around the
    pass, the audit record and the reply stay real): the fan-out's own cost without
    1,000 hosts' passes on this machine's CPUs."""
    import logging as std_logging

    import sqlalchemy as sa

    from reaper import audit as audit_mod
    from reaper import demo
    from reaper import policy as policy_mod
    from reaper import reconcile
    from reaper import rpc
    from reaper import state as state_mod
    from reaper.agent import service
    from reaper.rpc import server as rpc_server

    std_logging.basicConfig(level=std_logging.WARNING)
    std_logging.getLogger("reaper.audit").setLevel(std_logging.WARNING)
    # at shutdown the broker cancels consumers of channels being closed: harmless
    std_logging.getLogger("amqp").setLevel(std_logging.ERROR)
    conf = agent_conf(root, url)
    packed = None
    if threads:
        transport = rpc.get_transport(conf)
        packed = PackedAgents(transport, threads)
        get_transport = rpc.get_transport
        rpc.get_transport = lambda conf, url=None: transport    # build_server's transport
    servers, reapers = [], []
    for host in hosts:
        base = os.path.join(root, host)
        os.makedirs(os.path.join(base, "instances"))
        node = os.path.join(base, "node.xml")
        with open(node, "w") as f:
            f.write(demo.node_xml([]))
        pol = policy_mod.Policy(host=host, hypervisor_hostname=host,
                                instances_path=os.path.join(base, "instances"),
                                actions=policy_mod.default_actions(),
                                instances_path_shared="false")
        reaper = reconcile.Reaper(policy=pol, libvirt_uri=f"test://{node}",
                                  engine=sa.create_engine(db_url),
                                  state=state_mod.StateDB(os.path.join(base, "state")),
                                  audit=audit_mod.AuditLog(os.path.join(base, "audit.log"),
                                                           host),
                                  # as Reaper.from_conf: the agent's default, so a pass
                                  # with nothing new runs the change check, not the view
                                  full_view_interval=conf.reaper.full_view_interval,
                                  deep_check_interval=conf.reaper.deep_check_interval)
        agent = service.Agent(reaper, conf=conf)
        if recorded_pass:
            recorded = reaper.run_pass("audit", source="rpc")
            reaper.run_pass = lambda *args, _rep=recorded, **kw: _rep
        server = rpc_server.build_server(conf, agent)
        if packed is None:
            server.start()
        else:
            packed.add(server)
        servers.append(server)
        reapers.append(reaper)
    # as reconcile.build_from_conf does once an agent is built: what start-up made
    # (modules, 250 agents' wiring) is out of the cyclic GC's sight
    reconcile.settle_heap()
    if packed is not None:
        rpc.get_transport = get_transport
        packed.start()
    print("READY", len(servers), flush=True)
    sys.stdin.read()                         # the parent closes our stdin to stop us
    if packed is None:
        rpc_server.stop_server(*servers)
    else:
        packed.stop()
        servers[0].transport.cleanup()
    for r in reapers:
        r.close()
    return 0


# -- the parent ---------------------------------------------------------------------------

def build_db(db_url: str, hosts: list[str]) -> None:
    import sqlalchemy as sa

    from reaper.nova import schema

    engine = sa.create_engine(db_url)
    schema.create_all(engine)
    with engine.begin() as c:
        for i, h in enumerate(hosts, 1):
            c.execute(schema.services.insert().values(
                id=i, uuid=str(uuidlib.uuid4()), host=h, binary="nova-compute",
                topic="compute", report_count=1, disabled=False, deleted=0))
            c.execute(schema.compute_nodes.insert().values(
                service_id=i, host=h, hypervisor_hostname=h, uuid=str(uuidlib.uuid4()),
                vcpus=8, memory_mb=16384, local_gb=100, vcpus_used=0, memory_mb_used=0,
                local_gb_used=0, hypervisor_type="QEMU", hypervisor_version=8002000,
                cpu_info="{}", deleted=0))
    engine.dispose()


def sampler(amqp_url: str, queues_file: str) -> int:
    """The queue-depth sampler process: passive queue_declare on every queue, sweep
    after sweep, until "STOP" on stdin ("Q <name>" adds a queue); prints the peaks.

    A process of its own, so its sweeps never take the GIL from the client's threads.
    """
    from kombu import Connection

    with open(queues_file) as f:
        queues = [q.strip() for q in f if q.strip()]
    stop = threading.Event()

    def read_commands():
        for line in sys.stdin:
            if line.startswith("Q "):
                queues.append(line[2:].strip())
            elif line.strip() == "STOP":
                break
        stop.set()

    peak_one, peak_queue, peak_total, sweeps, swept = 0, None, 0, 0, 0.0
    with Connection(amqp_url, connect_timeout=5) as conn:
        chan = conn.channel()
        first = True
        threading.Thread(target=read_commands, daemon=True).start()
        while not stop.is_set():
            t0 = time.monotonic()
            total = 0
            for q in list(queues):
                try:
                    _, depth, _ = chan.queue_declare(queue=q, passive=True)
                except Exception:  # noqa: BLE001 - not there (yet): depth 0, new channel
                    chan = conn.channel()
                    continue
                total += depth
                if depth > peak_one:
                    peak_one, peak_queue = depth, q
            peak_total = max(peak_total, total)
            if first:
                print("READY", flush=True)
                first = False
            else:
                sweeps += 1
                swept += time.monotonic() - t0
            stop.wait(PAUSE_S)          # leave the 2 CPUs to the run being measured
    print(json.dumps({"peak_one": peak_one, "peak_queue": peak_queue,
                      "peak_total": peak_total, "sweeps": sweeps, "queues": len(queues),
                      "sweep_ms": round(1000 * swept / max(sweeps, 1))}), flush=True)
    return 0


class AmqpSampler:
    """The parent's handle on a sampler process."""

    def __init__(self, amqp_url: str, queues_file: str):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--sampler", "--url", amqp_url,
             "--queues", queues_file], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        if self.proc.stdout.readline().strip() != "READY":
            raise RuntimeError(f"the sampler failed (exit {self.proc.wait()})")
        self.added: set[str] = set()

    def add(self, queue: str) -> None:
        if queue not in self.added:
            self.added.add(queue)
            self.proc.stdin.write(f"Q {queue}\n")
            self.proc.stdin.flush()

    def result(self) -> dict:
        self.proc.stdin.write("STOP\n")
        self.proc.stdin.close()
        out = json.loads(self.proc.stdout.readline())
        self.proc.wait()
        return out


class CtlSampler(threading.Thread):
    """Peak of `messages` (ready + unacknowledged) by rabbitmqctl list_queues, in a
    loop. Each sample starts an Erlang VM (~0.4 s): few samples, and it slows the run,
    so it gets a run of its own, not one of the timed ones."""

    def __init__(self, vhost: str):
        super().__init__(daemon=True, name="rabbitmqctl-sampler")
        self.vhost = vhost
        self.stop_event = threading.Event()
        self.peak_one, self.peak_queue, self.peak_total, self.samples = 0, None, 0, 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                out = rabbitmqctl("list_queues", "-p", self.vhost, "name", "messages")
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                continue
            total = 0
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    depth = int(parts[1])
                    total += depth
                    if depth > self.peak_one:
                        self.peak_one, self.peak_queue = depth, parts[0]
            self.peak_total = max(self.peak_total, total)
            self.samples += 1


def fan_out_once(url: str, hosts: list[str], timeout: float, parallel: int,
                 on_reply_queue=None, connections: int | None = None):
    """What reaper-ctl --all audit does after parsing its config, timed: a fresh client,
    the calls, the merged report (JSON and table). Returns (seconds, report)."""
    from oslo_config import cfg

    from reaper.cmd import ctl
    from reaper.rpc import client as rpc_client

    conf = cfg.ConfigOpts()
    conf([], default_config_files=[])
    t0 = time.monotonic()
    kw = {"connections": connections} if connections else {}
    client = rpc_client.ReaperClient(conf, timeout=timeout, url=url, parallel=parallel,
                                     context=rpc_client.make_context("bench", "bench"), **kw)

    def progress(answered, unreachable, total):
        # bench only: oslo.messaging's private name of the client's reply queue
        name = getattr(getattr(client.transport, "_driver", None), "_reply_q", None)
        if name and on_reply_queue is not None:
            on_reply_queue(name)

    client.check_broker()
    try:
        results = client.fan_out(hosts, "audit", parallel=parallel, progress=progress,
                                 progress_interval=0.02)
    finally:
        client.close()
    elapsed = time.monotonic() - t0
    report = ctl.merged_report("audit", results, client.request_id, elapsed)
    json.dumps(report, default=str)
    ctl.render_table("audit", results, client.request_id, elapsed)
    return time.monotonic() - t0, report


AGENT_REPLY_POOL = 30        # oslo.messaging's default rpc_conn_pool_size (agents)


def planned_connections(a) -> int:
    """Broker connections the run may open at once (upper bound)."""
    if a.agent_connections == "own":
        agents = 2 * a.agents
    else:
        agents = a.workers * (1 + min(AGENT_REPLY_POOL, a.agent_threads))
    from reaper.rpc import client as rpc_client
    send = a.send_connections or rpc_client.SEND_CONNECTIONS
    return agents + min(a.parallel, a.agents, send) + 3  # + client pool, reply queue, sampler


def check_socket_budget(a) -> None:
    """Refuse a run that could take more than half of the broker's free sockets: a
    RabbitMQ out of file descriptors breaks down for everyone (mnesia included)."""
    status = json.loads(rabbitmqctl("status", "--formatter", "json"))
    fds = status.get("file_descriptors") or {}
    limit, used = fds.get("sockets_limit"), fds.get("sockets_used") or 0
    if not limit:
        return
    want = planned_connections(a)
    if want > (limit - used) // 2:
        raise SystemExit(f"this run may open {want} broker connections; the broker has "
                         f"{limit - used} of {limit} sockets free and the run takes at most "
                         f"half: use fewer agents or workers, --agent-connections shared, or "
                         f"a lower --parallel")


def cpu_seconds(pids) -> float:
    """user + system CPU seconds of these processes (all their threads) so far."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def broker_pid() -> int | None:
    """The test host's RabbitMQ (its node's pid file), for its CPU time."""
    import socket
    path = f"/var/lib/rabbitmq/mnesia/rabbit@{socket.gethostname().split('.')[0]}.pid"
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out.get("VmRSS", 0), out.get("VmHWM", 0)


def _run_line(run, elapsed, rep, n) -> str:
    return (f"run {run}: merged report of `audit` from {len(rep['hosts'])}/{n} agents in "
            f"{elapsed:.3f}s (unreachable {len(rep['unreachable'])}, errors "
            f"{len(rep['errors'])}, exit {rep['exit_code']})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4, help="agent processes")
    ap.add_argument("--runs", type=int, default=3, help="timed fan-outs")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-call timeout")
    ap.add_argument("--ctl-runs", type=int, default=2,
                    help="runs of the real reaper-ctl console script (subprocess)")
    ap.add_argument("--parallel", type=int, default=None, help="calls in flight at once "
                    "(reaper-ctl --parallel; default: its default)")
    ap.add_argument("--send-connections", type=int, default=None,
                    help="the client's publishing connections (default: the client's own "
                         "default, reaper.rpc.client.SEND_CONNECTIONS)")
    ap.add_argument("--broker", default="127.0.0.1:5672")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--agent-connections", choices=["shared", "own"], default="shared",
                    help="shared: the agents of a worker process share one consumer "
                         "connection, one reply pool and --agent-threads threads (see "
                         "PackedAgents); "
                         "own: each agent is a whole RPC server with its own transport, "
                         "as in production (2 broker connections per agent)")
    ap.add_argument("--agent-pass", choices=["real", "recorded"], default="real",
                    help="real: every call runs a real pass (empty libvirt test node, "
                         "the SQLite Nova DB, state DB, pass lock, audit log); recorded: "
                         "each agent answers with the report of a real pass it ran at "
                         "start (the fan-out's own cost, without 1,000 passes on these CPUs)")
    ap.add_argument("--agent-threads", type=int, default=8,
                    help="threads running the calls in each worker process (shared)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sampler", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--queues", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--hosts", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.root, a.url, a.db, a.hosts.split(","),
                      a.agent_threads if a.agent_connections == "shared" else 0,
                      a.agent_pass == "recorded")
    if a.sampler:
        return sampler(a.url, a.queues)

    if a.parallel is None:
        from reaper.rpc import client as rpc_client
        a.parallel = rpc_client.PARALLEL
    check_socket_budget(a)
    vhost = f"reaper-bench-{uuidlib.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    root = tempfile.mkdtemp(prefix="reaper-bench-fanout-")
    procs: list[subprocess.Popen] = []
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"rabbit://guest:guest@{a.broker}/{vhost}"
        amqp_url = f"amqp://guest:guest@{a.broker}/{vhost}"
        db_url = f"sqlite:///{os.path.join(root, 'nova.sqlite')}"
        hosts = [host_name(i) for i in range(a.agents)]
        build_db(db_url, hosts)
        agent_conf(root, url)

        t0 = time.monotonic()
        chunks = [hosts[i::a.workers] for i in range(a.workers)]
        for chunk in chunks:
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--worker", "--root", root,
                 "--url", url, "--db", db_url, "--hosts", ",".join(chunk)]
                + ["--agent-connections", a.agent_connections, "--agent-pass", a.agent_pass,
                   "--agent-threads", str(a.agent_threads)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"a worker failed to start (exit {p.wait()})")
        startup = time.monotonic() - t0
        print(f"agents: {a.agents} RPC servers (real Agent + Reaper each) in {a.workers} "
              f"worker processes ({a.agent_connections} connections, {a.agent_threads} "
              f"threads each, {a.agent_pass} passes), ready in "
              f"{startup:.1f}s; broker {a.broker} vhost {vhost}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")

        queues_file = os.path.join(root, "queues")
        with open(queues_file, "w") as f:
            f.write("\n".join(["reaper"] + [f"reaper.{h}" for h in hosts]) + "\n")
        # A real agent has run its init_host pass, and its periodic passes, before
        # anyone calls it: warm up outside the timing with each agent's first two
        # passes, both printed. The first reads the whole Nova view (first SQLite
        # connection, libvirt connection, state DB); the second is the agent's first
        # change check, which compiles that statement in the agent's own engine (with
        # deep checks on, the full read takes the deep fingerprint with another one):
        # a once-per-agent cost that 1,000 agents on 2 CPUs pay in the same run.
        # A generous timeout: an agent that misses it would still be running its first
        # pass when the next run starts, and that run would pay for it.
        for label in ("0a (warm-up: each agent's first pass, the whole Nova view, not timed)",
                      "0b (warm-up: each agent's first change check, not timed)"):
            elapsed, rep = fan_out_once(url, hosts, max(a.timeout, WARM_UP_TIMEOUT_S),
                                        a.parallel)
            print(_run_line(label, elapsed, rep, a.agents))
        times, cpu = [], []
        bpid = broker_pid()
        worker_pids = [p.pid for p in procs]
        for run in range(1, a.runs + 1):
            # Nothing samples the broker during a timed run: the sampler's sweeps (a
            # passive queue_declare per queue, ~1,000 round trips a sweep) cost the
            # broker and the 2 CPUs more than the fan-out itself; the queue depths are
            # taken in runs of their own, below.
            c0 = (cpu_seconds([os.getpid()]), cpu_seconds(worker_pids),
                  cpu_seconds([bpid] if bpid else []))
            elapsed, rep = fan_out_once(url, hosts, a.timeout, a.parallel, None,
                                        a.send_connections)
            c1 = (cpu_seconds([os.getpid()]), cpu_seconds(worker_pids),
                  cpu_seconds([bpid] if bpid else []))
            times.append(elapsed)
            cpu.append([b - a_ for a_, b in zip(c0, c1, strict=True)])
            print(_run_line(run, elapsed, rep, a.agents))
        smp = AmqpSampler(amqp_url, queues_file)
        elapsed, rep = fan_out_once(url, hosts, a.timeout, a.parallel, smp.add,
                                    a.send_connections)
        d = smp.result()
        print(f"1 more run (not timed: the AMQP sampler alongside) in {elapsed:.3f}s "
              f"({len(rep['hosts'])}/{a.agents} answered); peak queue depth (messages "
              f"ready, passive queue_declare): {d['peak_one']} in one queue"
              + (f" ({d['peak_queue']})" if d["peak_queue"] else "")
              + f", {d['peak_total']} in all {d['queues']} queues; "
              f"{d['sweeps']} sweeps of {d['sweep_ms']} ms")
        print(f"load average {os.getloadavg()[0]:.1f} after the timed runs (other work on "
              f"this machine shares its CPUs)")
        med = [statistics.median(c[i] for c in cpu) for i in range(3)]
        print(f"CPU seconds per timed run (median): controller {med[0]:.2f}, agents "
              f"{med[1]:.2f}, broker {med[2]:.2f} (the broker's includes other users'); "
              f"per call {1000 * med[0] / a.agents:.2f} / {1000 * med[1] / a.agents:.2f} / "
              f"{1000 * med[2] / a.agents:.2f} ms")
        mem = [memory_kb(pid) for pid in worker_pids]
        print(f"agents' memory: {sum(m[0] for m in mem) / 1024:.0f} MB RSS in all "
              f"({sum(m[0] for m in mem) / a.agents / 1024:.2f} MB per agent); per worker "
              f"process of ~{-(-a.agents // a.workers)} agents: RSS "
              f"{min(m[0] for m in mem) / 1024:.0f}-{max(m[0] for m in mem) / 1024:.0f} MB, "
              f"peak {max(m[1] for m in mem) / 1024:.0f} MB")
        print(f"time to merged report: best {min(times):.3f}s, median "
              f"{statistics.median(times):.3f}s, worst {max(times):.3f}s "
              f"(target < {TARGET_S:.0f}s: {'met' if max(times) < TARGET_S else 'MISSED'})")

        ctl_smp = CtlSampler(vhost)
        ctl_smp.start()
        time.sleep(0.5)
        extra = []
        for _ in range(2):
            elapsed, rep = fan_out_once(url, hosts, a.timeout, a.parallel)
            extra.append(f"{elapsed:.3f}s ({len(rep['hosts'])}/{a.agents} answered)")
        ctl_smp.stop_event.set()
        ctl_smp.join()
        print(f"2 more runs (not timed: rabbitmqctl sampling alongside) in {', '.join(extra)}; "
              f"peak queue depth (messages ready + unacked, rabbitmqctl list_queues): "
              f"{ctl_smp.peak_one} in one queue"
              + (f" ({ctl_smp.peak_queue})" if ctl_smp.peak_queue else "")
              + f", {ctl_smp.peak_total} in all; {ctl_smp.samples} samples")

        hosts_file = os.path.join(root, "hosts")
        with open(hosts_file, "w") as f:
            f.write("\n".join(hosts) + "\n")
        ctl_conf = os.path.join(root, "ctl.conf")
        with open(ctl_conf, "w") as f:
            f.write(f"[DEFAULT]\ntransport_url = {url}\n")
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        walls, rss, answered, codes = [], [], [], []
        for _ in range(a.ctl_runs):
            out_path = os.path.join(root, "ctl.out")
            with open(out_path, "w") as out, open(os.devnull, "w") as err:
                t0 = time.monotonic()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "reaper.cmd.ctl", "--config-file", ctl_conf,
                     "--hosts-file", hosts_file, "--timeout", str(a.timeout), "--format",
                     "json", "audit"], stdout=out, stderr=err, env=env)
                _, status, usage = os.wait4(proc.pid, 0)
                walls.append(time.monotonic() - t0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            rss.append(usage.ru_maxrss / 1024)
            with open(out_path) as f:
                text = f.read()
            answered.append(len(json.loads(text)["hosts"]) if text.startswith("{") else 0)
            codes.append(proc.returncode)
        if walls:
            print(f"reaper-ctl --hosts-file ({a.agents} hosts) --format json audit as a "
                  f"subprocess, {a.ctl_runs} runs: wall (incl. interpreter start-up and imports) "
                  f"median {statistics.median(walls):.3f}s, {min(walls):.3f}-{max(walls):.3f}s; "
                  f"peak RSS median {statistics.median(rss):.0f} MB, max {max(rss):.0f} MB; "
                  f"answered {answered}, exit {codes}")
        return 0 if max(times) < TARGET_S else 1
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            rabbitmqctl("delete_vhost", vhost)
        except Exception as e:  # noqa: BLE001
            print(f"could not delete vhost {vhost}: {e}", file=sys.stderr)
        if a.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

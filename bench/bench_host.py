"""Benchmark one whole pass over a busy host against the bare enumerations it needs.

The host (built once, removed at the end):

* --domains defined domains (default 1,000) on libvirt's test driver reached
  through libvirtd (``test+unix://``, as production reaches qemu:///system over
  libvirtd's RPC; ``--libvirt in-process`` for ``test://``). Their XML is Nova's
  own (tests/fixtures/nova_xml/image_hybrid.xml, written by Nova's libvirt config
  classes) with a hybrid-plugged VIF, the instance's disk and console log, and
  one iSCSI volume (a block disk by-path, serial = volume id);
* --vifs hybrid VIFs (default 1,000 = 4,000 devices: qbr, qvb, qvo, tap) in a
  network namespace of the run's own, and as many OVS ports on a bench-only
  bridge (private ovsdb-server by default; ``--ovsdb system``: the host's);
* --sessions iSCSI sessions of --luns LUNs (default 500 x 2) on the project's
  simulated initiator (tests/iscsi_sim: sysfs, /dev and node database), read by
  open-iscsi's own iscsiadm with the simulated tree bind-mounted at /sys, /dev
  and /etc/iscsi in the measuring process's mount namespace (``--iscsiadm sim``:
  the simulator's Python iscsiadm on the tree where it is);
* a Nova DB (SQLite, or ``--db`` a MariaDB server URL as bench_pass.py) with one
  live row, one BDM and one network info cache per domain plus 100 rows of other
  hosts per domain (100,000+ rows);
* an instance directory per domain.

Every domain, device, port and LUN belongs to a live instance: the pass finds
nothing to do (a busy host in its steady state) but must read everything.

Each of --runs fresh processes (so the first pass is really cold: nothing
imported, parsed or connected beyond the libvirt connection) measures:

* cold: the first audit pass of the process (the one init_host runs);
* warm: --passes later passes, alternating with
* bare: the sum of the bare enumerations of the same things on the same run:
  list the domains + XMLDesc each, scandir the instance directories, one
  RTM_GETLINK dump on a plain netlink socket (bytes received and split, as
  bench_network.py's floor), one OVSDB transact of the columns read on a plain
  socket parsed by stdlib json, ``iscsiadm -m session`` + the sysfs walk, and
  the same DB rows (plain selects of the view's columns). The network dumps
  through the libraries (pyroute2 get_links, python-ovs) are printed beside, not
  summed: pyroute2's own decoder alone takes longer than the whole pass;
* each kind's share of the pass (collector time per kind; "rest" is planning,
  guards, audit and the state DB), the peak RSS of the passes (taken before any
  bare enumeration runs in the process) and the import time.

The measured Reaper uses the agent's ``[reaper] full_view_interval`` and
``deep_check_interval`` (86400 s and 3600 s, as Reaper.from_conf: the full read also
takes the deep fingerprint): the cold pass reads the whole Nova view, a warm pass with
nothing new runs the one change-check statement instead (reaper.nova.changes);
``--full-view-interval 0`` reads the whole view every pass. The bare side reads
the same DB rows either way. The report says which view each pass read.

Printed: medians over the runs with their min-max spread. ``--profile FILE`` and
``--profile-warm FILE`` write cProfile stats of the last process's cold pass and
of its last warm pass (that pass then counts in the figures too).

    .venv/bin/python bench/bench_host.py                         # the busy host, 3 runs
    .venv/bin/python bench/bench_host.py --runs 5 --passes 5
    .venv/bin/python bench/bench_host.py --db mysql+pymysql://reaper:reaper@127.0.0.1/
    .venv/bin/python bench/bench_host.py --domains 20 --vifs 20 --sessions 10 --runs 1
    .venv/bin/python bench/bench_host.py --full-view-interval 0   # whole view every pass
    .venv/bin/python bench/bench_host.py --domains 200 --vifs 200 --sessions 100 --runs 1 \
        --profile /tmp/cold.prof --profile-warm /tmp/warm.prof

Needs root (network namespace, ovsdb-server) and, by default, libvirtd.
"""
from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (also puts the repository root on sys.path)

HOST = benchlib.HOST
REAL_ISCSIADM = "/usr/sbin/iscsiadm"
def _agent_default(name: str = "full_view_interval") -> int:
    """The agent's default of a [reaper] pass option (Reaper.from_conf uses them)."""
    from reaper.conf import reaper as conf_reaper
    return next(o.default for o in conf_reaper.pass_opts if o.name == name)


KINDS = ("domain", "instance_dir", "vif", "ovs_port", "iscsi_session", "nova_db")
FIXTURE = os.path.join(benchlib.ROOT, "tests", "fixtures", "nova_xml", "image_hybrid.xml")
# What identifies the fixture's instance, replaced per domain.
FX_UUID, FX_NAME, FX_PORT = ("6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c", "instance-0000002a",
                             "1c2d3e4f-5a")


# --------------------------------------------------------------------------
# building the host (parent process)
# --------------------------------------------------------------------------

def lun_of(k: int, luns: int) -> tuple[str, str, int]:
    """(portal, iqn, lun) of the k-th LUN of the simulated host."""
    i = k // luns
    portals = benchlib.iscsi_portals()
    return portals[i % len(portals)], benchlib.iscsi_iqn(i), k % luns


def by_path(portal: str, iqn: str, lun: int) -> str:
    return f"/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}"


def volume_id(i: int) -> str:
    return f"{i:08x}-b01d-4000-8000-{i:012x}"


def domain_xml(template: str, i: int, inst: str, lun: tuple | None) -> str:
    u = benchlib.vm_uuid(i)
    xml = (template.replace(FX_UUID, u).replace(FX_NAME, f"instance-{i + 1:08x}")
           .replace(FX_PORT, benchlib.port_id(i)[:11])
           .replace("/var/lib/nova/instances", inst))
    if lun is not None:
        disk = ("<disk type=\"block\" device=\"disk\"><driver name=\"qemu\" type=\"raw\" "
                f"cache=\"none\" io=\"native\"/><source dev=\"{by_path(*lun)}\"/>"
                f"<target dev=\"vdb\" bus=\"virtio\"/><serial>{volume_id(i)}</serial></disk>")
        xml = xml.replace("<interface ", disk + "<interface ", 1)
    return xml


def build(root: str, args) -> dict:
    """The Nova DB, instance directories and the libvirt node file (the network and
    iSCSI parts are built by the parent itself)."""
    from reaper.nova import schema

    n, total_luns = args.domains, args.sessions * args.luns
    inst = os.path.join(root, "instances")
    os.makedirs(inst)
    with open(FIXTURE) as f:
        template = f.read()
    local = [benchlib.vm_uuid(i) for i in range(n)]
    doms = []
    for i, u in enumerate(local):
        d = os.path.join(inst, u)
        os.mkdir(d)
        for fname in ("disk", "disk.config", "console.log"):
            with open(os.path.join(d, fname), "wb") as f:
                f.write(b"\0" * 512)
        doms.append(domain_xml(template, i, inst,
                               lun_of(i, args.luns) if i < total_luns else None))
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write("<node>" + "".join(doms) + "</node>")

    def fill(c, now):
        caches, bdms = [], []
        for i, u in enumerate(local):
            p = benchlib.port_id(i)
            # every domain's XML has its VIF (the devices exist for the first --vifs)
            caches.append(dict(instance_uuid=u, deleted=0, created_at=now,
                               network_info=json.dumps([{
                                   "id": p, "address": "fa:16:3e:00:00:01", "type": "ovs",
                                   "devname": "tap" + p[:11], "ovs_interfaceid": p,
                                   "details": {"ovs_hybrid_plug": True},
                                   "network": {"bridge": "br-int", "subnets": []},
                                   "active": True}])))
            if i < total_luns:
                portal, iqn, lun = lun_of(i, args.luns)
                vol = volume_id(i)
                ci = {"driver_volume_type": "iscsi", "serial": vol, "data": {
                    "target_portal": portal, "target_iqn": iqn, "target_lun": lun,
                    "volume_id": vol, "auth_method": "CHAP", "auth_username": "u",
                    "auth_password": "p", "target_discovered": False}}
                bdms.append(dict(uuid=volume_id(i + 10 ** 6), instance_uuid=u, volume_id=vol,
                                 source_type="volume", destination_type="volume",
                                 device_name="/dev/vdb", delete_on_termination=False,
                                 connection_info=json.dumps(ci), attachment_id=volume_id(i),
                                 device_type="disk", disk_bus="virtio", deleted=0,
                                 created_at=now))
        if caches:
            c.execute(schema.instance_info_caches.insert(), caches)
        if bdms:
            c.execute(schema.block_device_mapping.insert(), bdms)

    url, name = benchlib.create_db(args.db, root, "host")
    benchlib.fill_nova_db(url, local, args.others, seed=n, fill=fill)
    return {"url": url, "dbname": name, "inst": inst, "node": node}


# --------------------------------------------------------------------------
# measuring (a fresh child process per run)
# --------------------------------------------------------------------------

class KindTimer:
    """Time spent in each kind's collector (and the DB view) during one pass."""

    def __init__(self):
        self.t: dict[str, float] = {}

    def wrap(self, kind: str, fn):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[kind] = self.t.get(kind, 0.0) + time.perf_counter() - t
        return timed


def child(cfg: dict) -> dict:
    t_imp = time.perf_counter()
    from reaper import audit as audit_mod
    from reaper import reconcile
    from reaper.kinds.iscsi import plugin as volume_wiring
    from reaper.kinds.network import plugin as network_wiring
    from reaper import policy as policy_mod
    from reaper import state as state_mod
    from reaper.kinds.network import unplug as net_exec
    from reaper.kinds.instance import dirs as dir_inv
    from reaper.kinds.instance import libvirt as libvirt_inv
    from reaper.kinds.network import collector as net_inv
    from reaper.kinds.network import ovs as ovs_inv
    from reaper.nova import db as nova_db
    from reaper.nova import view as nova_view
    import_s = time.perf_counter() - t_imp

    from oslo_config import cfg as oslo_cfg
    conf = oslo_cfg.CONF
    conf([], project="reaper", default_config_files=[])
    conf.set_override("sysfs_root", cfg["sim_sys"], group="iscsi")
    conf.set_override("dev_root", cfg["sim_dev"], group="iscsi")
    conf.set_override("iscsiadm", cfg["iscsiadm"], group="iscsi")

    uri = f"test{'+unix' if cfg['libvirt'] == 'daemon' else ''}://{cfg['node']}"
    conn = libvirt_inv.open_connection(uri)
    pol = policy_mod.Policy(host=HOST, hypervisor_hostname=HOST, instances_path=cfg["inst"],
                            actions=policy_mod.default_actions(), max_destroy_per_pass=10,
                            instances_path_shared="false")
    eng = nova_db.make_engine(cfg["url"])
    reaper = reconcile.Reaper(policy=pol, libvirt_uri=uri, engine=eng,
                              state=state_mod.StateDB(os.path.join(cfg["root"], "state",
                                                                   str(os.getpid()))),
                              audit=audit_mod.AuditLog(None, HOST), connect=lambda: conn,
                              full_view_interval=cfg["full_view_interval"],
                              deep_check_interval=_agent_default("deep_check_interval"))
    template = pol.instance_name_template
    handles = net_exec.NetworkHandles(
        netlink=net_inv.Netlink(cfg["netns"]),
        ovs=ovs_inv.OvsHandle(cfg["ovs_remote"], cfg["bridge"], 30),
        domains=lambda c: libvirt_inv.collect_domains(c, template))
    reaper = network_wiring.enable(volume_wiring.enable(reaper, conf), conf, handles=handles)
    if not cfg.get("no_settle"):
        reconcile.settle_heap()     # as reconcile.build_from_conf does for the agent

    kt = KindTimer()
    import gc
    gc_state = {"t0": 0.0}

    def gc_cb(phase, info):
        if phase == "start":
            gc_state["t0"] = time.perf_counter()
        else:
            kt.t["gc"] = kt.t.get("gc", 0.0) + time.perf_counter() - gc_state["t0"]
    gc.callbacks.append(gc_cb)
    if os.environ.get("BENCH_HOST_GC") == "off":
        gc.disable()
    libvirt_inv.collect_domains = kt.wrap("domain", libvirt_inv.collect_domains)
    dir_inv.collect_instance_dirs = kt.wrap("instance_dir", dir_inv.collect_instance_dirs)
    nova_view.load_view = kt.wrap("nova_db", nova_view.load_view)
    from reaper.nova import changes as nova_changes     # the unchanged pass's one check
    nova_changes.read = kt.wrap("nova_db", nova_changes.read)
    net_inv.collect = kt.wrap("vif", net_inv.collect)          # the kinds' collectors
    ovs_inv.collect = kt.wrap("ovs_port", ovs_inv.collect)
    volume_wiring.collect = kt.wrap("iscsi_session", volume_wiring.collect)
    # the collection as a whole: the domains on their own thread, the other kinds on
    # the pass's (reaper.kinds.manager), so the kinds' own times overlap
    from reaper.kinds import manager as kinds_manager
    kinds_manager.KindManager.collect = kt.wrap("collection",
                                                kinds_manager.KindManager.collect)

    views: list[str] = []       # what each pass read of the Nova DB ("full", "unchanged")

    def one_pass():
        kt.t = {}
        t, cpu = time.perf_counter(), time.process_time()
        rep = reaper.run_pass("audit")
        wall = time.perf_counter() - t
        kt.t["cpu"] = time.process_time() - cpu
        assert rep.exit_code == 0 and not rep.errors and not rep.guards, rep.to_table()
        assert not rep.findings, [f.get("classification") for f in rep.findings][:10]
        views.append(rep.db_view)
        return wall, dict(kt.t)

    import socket

    from pyroute2 import netns as pnetns

    from reaper.kinds.iscsi import collector as iscsi_inv
    raw_nl = pnetns.create_socket(cfg["netns"], socket.AF_NETLINK, socket.SOCK_RAW, 0)
    raw_nl.bind((0, 0))
    raw_nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    ovs_path = cfg["ovs_remote"].split(":", 1)[1]
    uuids = [d.UUIDString() for d in conn.listAllDomains(0)]

    def bare_domains() -> int:
        return len([d.XMLDesc(0) for d in conn.listAllDomains(0)])

    def bare_overlapped() -> float:
        """The same enumerations overlapped as the pass overlaps its collectors (the
        domains on a thread of their own, the others meanwhile on this one), for
        comparison; the target is against the sum (bare())."""
        import threading
        t = time.perf_counter()
        worker = threading.Thread(target=bare_domains)
        worker.start()
        len([e.name for e in os.scandir(cfg["inst"])])
        benchlib.raw_netlink_dump(raw_nl)
        benchlib.raw_ovsdb_dump(ovs_path, cfg["bridge"])
        iscsi_inv.bare_walk(cfg["sim_sys"], iscsiadm=cfg["iscsiadm"])
        benchlib.bare_db_rows(eng, HOST, uuids, with_dependents=True)
        worker.join()
        return time.perf_counter() - t

    def bare() -> dict:
        t, out = time.perf_counter(), {}
        cpu = time.process_time()
        n_xml = bare_domains()
        out["domain"], t = time.perf_counter() - t, time.perf_counter()
        n_dirs = len([e.name for e in os.scandir(cfg["inst"])])
        out["instance_dir"], t = time.perf_counter() - t, time.perf_counter()
        n_links = benchlib.raw_netlink_dump(raw_nl)
        out["vif"], t = time.perf_counter() - t, time.perf_counter()
        n_ports = benchlib.raw_ovsdb_dump(ovs_path, cfg["bridge"])
        out["ovs_port"], t = time.perf_counter() - t, time.perf_counter()
        n_sess = len(iscsi_inv.bare_walk(cfg["sim_sys"], iscsiadm=cfg["iscsiadm"]))
        out["iscsi_session"], t = time.perf_counter() - t, time.perf_counter()
        n_rows = benchlib.bare_db_rows(eng, HOST, uuids, with_dependents=True)
        out["nova_db"] = time.perf_counter() - t
        out["cpu"] = time.process_time() - cpu
        out["counts"] = {"domains": n_xml, "dirs": n_dirs, "links": n_links,
                         "ovs_rows": n_ports, "sessions": n_sess, "db_rows": n_rows}
        return out

    def lib_dumps() -> float:
        """The same two network dumps through the libraries (pyroute2's own decoder,
        python-ovs), for comparison with the collectors; not part of the bare sum."""
        from pyroute2 import IPRoute
        with IPRoute(netns=cfg["netns"], flags=0) as ipr:
            t = time.perf_counter()
            ipr.get_links()
            benchlib.pyovs_dump(cfg["ovs_remote"], cfg["bridge"])
            return time.perf_counter() - t

    def profiled(path):
        if not path:
            return one_pass()
        import cProfile
        prof = cProfile.Profile()
        # cProfile sees one thread: the domains' collector, on a thread of its own, is
        # profiled into FILE.domains
        collect_one = kinds_manager._collect_one

        def thread_profiled(kind, *a):
            if kind.describe().name != kinds_manager.PRIMARY:
                return collect_one(kind, *a)
            p2 = cProfile.Profile()
            p2.enable()
            try:
                return collect_one(kind, *a)
            finally:
                p2.disable()
                p2.dump_stats(path + ".domains")
        kinds_manager._collect_one = thread_profiled
        prof.enable()
        try:
            return one_pass()
        finally:
            prof.disable()
            prof.dump_stats(path)
            kinds_manager._collect_one = collect_one

    cold_wall, cold_kinds = profiled(cfg.get("profile"))
    warm, warm_kinds, bares = [], [], []
    rss_passes = None
    for i in range(cfg["passes"]):
        w, k = profiled(cfg.get("profile_warm") if i == cfg["passes"] - 1 else None)
        warm.append(w)
        warm_kinds.append(k)
        if rss_passes is None:      # before any bare enumeration ran in this process
            rss_passes = benchlib.peak_rss_mb()
        bares.append(bare())
        bares[-1]["overlapped"] = bare_overlapped()
    lib_s = lib_dumps()
    raw_nl.close()
    handles.close()
    reaper.close()
    conn.close()

    def med(rows, kind):
        return statistics.median(r.get(kind, 0.0) for r in rows)
    bare_total = [sum(b[k] for k in KINDS) for b in bares]
    return {"import_s": import_s, "since_start_s": time.perf_counter() - T_START,
            "cold_s": cold_wall, "cold_kinds": cold_kinds,
            "warm_s": statistics.median(warm), "warm_all": warm,
            "warm_kinds": {k: med(warm_kinds, k) for k in (*KINDS, "collection", "gc", "cpu")},
            "bare_overlapped_s": med(bares, "overlapped"),
            "bare_s": statistics.median(bare_total), "bare_all": bare_total,
            "bare_kinds": {k: med(bares, k) for k in (*KINDS, "cpu")},
            "counts": bares[-1]["counts"], "peak_rss_mb": rss_passes,
            "peak_rss_all_mb": benchlib.peak_rss_mb(),
            "lib_net_s": lib_s, "warm_net_s": med(warm_kinds, "vif") + med(warm_kinds, "ovs_port"),
            "db_views": views}


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------

def fmt_spread(values, scale=1.0, digits=3, unit="") -> str:
    s = benchlib.spread([v * scale for v in values])
    return (f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})")


def report(args, results: list[dict], build_s: float, load: tuple) -> None:
    c = results[0]["counts"]
    print(f"host: {c['domains']} domains ({args.libvirt} test driver, Nova's XML), "
          f"{c['links']} netlink devices in the bench netns, {c['ovs_rows']} OVS interfaces "
          f"on a bench bridge ({args.ovsdb} ovsdb-server), {c['sessions']} iSCSI sessions x "
          f"{args.luns} LUNs (simulated initiator, {args.iscsiadm} iscsiadm), {c['db_rows']} DB rows read of "
          f"{args.domains * (args.others + 3) + 1}+ ({'MariaDB' if args.db else 'SQLite'}); "
          f"built in {build_s:.0f}s")
    modes = sorted({f"cold {r['db_views'][0]}, warm " + "/".join(sorted(set(r["db_views"][1:])))
                    for r in results})
    print(f"Nova DB view: full_view_interval={args.full_view_interval} "
          f"({'the agent default' if args.full_view_interval == _agent_default() else 'not the agent default'}"
          f"); passes read: {'; '.join(modes)} (unchanged: the one change-check "
          f"statement, the bare side still reads the same DB rows)")
    print(f"{len(results)} fresh processes x (1 cold + {args.passes} warm passes); "
          f"load average before/after: {load[0]} / {load[1]}; figures: median (min-max) "
          f"over the processes")
    cold = [r["cold_s"] for r in results]
    warm = [r["warm_s"] for r in results]
    bare = [r["bare_s"] for r in results]
    print(f"  bare enumerations (sum)   {fmt_spread(bare, unit=' s')}")
    print(f"  pass, warm                {fmt_spread(warm, unit=' s')}")
    print(f"  pass, cold (1st)          {fmt_spread(cold, unit=' s')}")
    wr = [r["warm_s"] / r["bare_s"] for r in results]
    cr = [r["cold_s"] / r["bare_s"] for r in results]
    print(f"  ratio warm / bare         {fmt_spread(wr, digits=2, unit='x')}  target <= 1.15x")
    print(f"  ratio cold / bare         {fmt_spread(cr, digits=2, unit='x')}  target <= 1.5x")
    bo = [r["bare_overlapped_s"] for r in results]
    print(f"  (for comparison: the bare enumerations overlapped as the pass overlaps its "
          f"collectors, domains on a thread of their own: {fmt_spread(bo, unit=' s')}; "
          f"warm / that {fmt_spread([r['warm_s'] / r['bare_overlapped_s'] for r in results], digits=2, unit='x')}, "
          f"cold / that {fmt_spread([r['cold_s'] / r['bare_overlapped_s'] for r in results], digits=2, unit='x')})")
    print(f"  CPU time of the measuring process (the servers' and iscsiadm's not counted): "
          f"bare {fmt_spread([r['bare_kinds']['cpu'] for r in results])} s, "
          f"warm {fmt_spread([r['warm_kinds']['cpu'] for r in results])} s, "
          f"cold {fmt_spread([r['cold_kinds']['cpu'] for r in results])} s")
    rss = [r["peak_rss_mb"] for r in results]
    print(f"  peak RSS, the passes      {fmt_spread(rss, digits=1, unit=' MB')}  "
          f"target < 150 MB (process peak incl. the bare runs: "
          f"{fmt_spread([r['peak_rss_all_mb'] for r in results], digits=1)} MB)")
    print(f"  network, warm collectors vs library dumps (pyroute2 get_links + python-ovs "
          f"transact): {fmt_spread([r['warm_net_s'] for r in results])} s vs "
          f"{fmt_spread([r['lib_net_s'] for r in results])} s")
    print(f"  imports (reaper + deps)   {fmt_spread([r['import_s'] for r in results])} s "
          f"(before the cold pass, not in it)")
    print("  per kind (medians, s; the domains' collector runs on a thread of its own while "
          "the other kinds collect, so the kinds' times overlap and add up to more than the "
          "collection):")
    print("                                       bare     warm    cold   share of warm / cold pass")
    for k in (*KINDS, "collection", "rest", "gc"):
        if k == "gc":
            b = ""
            wv = statistics.median(r["warm_kinds"].get(k, 0.0) for r in results)
            cv = statistics.median(r["cold_kinds"].get(k, 0.0) for r in results)
            k = "(of which GC)"
        elif k == "collection":
            b = ""
            wv = statistics.median(r["warm_kinds"].get(k, 0.0) for r in results)
            cv = statistics.median(r["cold_kinds"].get(k, 0.0) for r in results)
            k = "collection (overlapped)"
        elif k == "rest":
            b = ""
            wv = statistics.median(r["warm_s"] - r["warm_kinds"].get("collection", 0)
                                   - r["warm_kinds"].get("nova_db", 0) for r in results)
            cv = statistics.median(r["cold_s"] - r["cold_kinds"].get("collection", 0)
                                   - r["cold_kinds"].get("nova_db", 0) for r in results)
            k = "rest (pass - collection - DB)"
        else:
            b = f"{statistics.median(r['bare_kinds'][k] for r in results):8.3f}"
            wv = statistics.median(r["warm_kinds"].get(k, 0.0) for r in results)
            cv = statistics.median(r["cold_kinds"].get(k, 0.0) for r in results)
        print(f"    {k:<30}{b:>8} {wv:8.3f} {cv:7.3f}   "
              f"{100 * wv / statistics.median(warm):5.1f}% / "
              f"{100 * cv / statistics.median(cold):5.1f}%")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", type=int, default=1000)
    ap.add_argument("--vifs", type=int, default=1000, help="hybrid VIFs (4 devices each)")
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--luns", type=int, default=2, help="LUNs per iSCSI session")
    ap.add_argument("--others", type=int, default=100,
                    help="rows of other hosts in the Nova DB per domain")
    ap.add_argument("--db", help="server URL without database (MariaDB); default SQLite")
    ap.add_argument("--libvirt", choices=["daemon", "in-process"], default="daemon",
                    help="the test driver through libvirtd (test+unix://) or in process")
    ap.add_argument("--ovsdb", choices=["private", "system"], default="private")
    ap.add_argument("--iscsiadm", choices=["real", "sim"], default="real",
                    help="real: open-iscsi's iscsiadm (C) reading the simulated sysfs, /dev "
                         "and node database bind-mounted at /sys, /dev, /etc/iscsi in a "
                         "mount namespace of the measuring process (as bench_iscsi.py); "
                         "sim: the simulator's iscsiadm (Python) on the simulated tree")
    ap.add_argument("--full-view-interval", type=int,
                    help="[reaper] full_view_interval of the measured Reaper (default: the "
                         "agent's, 86400: a warm pass with nothing new runs the change "
                         "check instead of the whole view); 0: every pass reads the whole view")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes (cold passes)")
    ap.add_argument("--passes", type=int, default=3, help="warm passes per process")
    ap.add_argument("--profile", metavar="FILE",
                    help="cProfile the cold pass of the last process into FILE (pstats; the "
                         "last, so that the first run's cold kernel and libvirtd caches do "
                         "not show)")
    ap.add_argument("--profile-warm", metavar="FILE",
                    help="cProfile the last warm pass of the last process into FILE")
    ap.add_argument("--no-settle", action="store_true",
                    help="skip reconcile.settle_heap() (gc.freeze after start-up), which "
                         "the agent runs, to see what it saves")
    ap.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.full_view_interval is None and not args.child:
        args.full_view_interval = _agent_default()
    if args.child:
        with open(args.child) as f:
            print(json.dumps(child(json.load(f))))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespace, ovsdb-server)", file=sys.stderr)
        return 2
    if args.iscsiadm == "real" and not (os.path.exists(REAL_ISCSIADM)
                                        and shutil.which("unshare")):
        print(f"{REAL_ISCSIADM} or unshare missing: use --iscsiadm sim", file=sys.stderr)
        return 2
    if args.vifs > args.domains or args.sessions * args.luns > args.domains:
        print("every VIF and LUN belongs to a domain: --vifs and --sessions x --luns must "
              "not exceed --domains", file=sys.stderr)
        return 2

    from tests import iscsi_sim

    root = tempfile.mkdtemp(prefix="reaper-bench-host-")
    net = benchlib.NetHost(args.vifs, args.ovsdb, root)
    built = None
    load0 = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        built = build(root, args)
        net.build()
        sim = benchlib.build_iscsi_sim(os.path.join(root, "iscsi"), args.sessions, args.luns)
        build_s = time.perf_counter() - t0
        real = args.iscsiadm == "real"
        cfg = dict(built, root=root, netns=net.ns, bridge=net.bridge, ovs_remote=net.remote,
                   sim_sys="/sys" if real else sim.sys, sim_dev="/dev" if real else sim.dev,
                   iscsiadm=REAL_ISCSIADM if real else "iscsiadm",
                   libvirt=args.libvirt, passes=args.passes, no_settle=args.no_settle,
                   full_view_interval=args.full_view_interval)
        cfg_path = os.path.join(root, "child.json")
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        env = iscsi_sim.env(sim.root)
        env["PYTHONPATH"] = benchlib.ROOT + os.pathsep + env.get("PYTHONPATH", "")
        results = []
        for run in range(args.runs):
            last = run == args.runs - 1
            if args.profile or args.profile_warm:
                cfg["profile"] = os.path.abspath(args.profile) if last and args.profile else None
                cfg["profile_warm"] = (os.path.abspath(args.profile_warm)
                                       if last and args.profile_warm else None)
                with open(cfg_path, "w") as f:
                    json.dump(cfg, f)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", cfg_path]
            r = subprocess.run(iscsi_sim.ns_argv(sim.root, cmd) if real else cmd,
                               capture_output=True, text=True, env=env)
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(r.stdout.strip().splitlines()[-1]))
        report(args, results, build_s, (round(load0, 2), round(os.getloadavg()[0], 2)))
        if args.json:
            print(json.dumps(results))
        return 0
    finally:
        net.destroy()
        if built:
            benchlib.drop_db(args.db, built["dbname"])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

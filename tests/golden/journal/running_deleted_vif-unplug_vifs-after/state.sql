BEGIN TRANSACTION;
CREATE TABLE blocked_passes (
    pass_id TEXT PRIMARY KEY,
    teardown_keys TEXT NOT NULL,   -- JSON list: what the blocked plan would destroy
    created_at TEXT NOT NULL,
    approved_at TEXT,
    used_at TEXT
);
CREATE TABLE flags (
    name TEXT PRIMARY KEY,         -- e.g. 'paused' (survives a restart)
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass_id TEXT NOT NULL,
    instance_uuid TEXT,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,          -- running | done | aborted | quarantined
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    owner TEXT                     -- JSON: pid, start, boot_id, process (reaper.procid)
);
INSERT INTO "journal" VALUES(1,'req-3d335945-6ede-440f-8af9-2582e9b6b3aa','9a2e0000-0000-4000-8000-000000000004','{"action": "reap", "claim_marker": null, "classification": "running_deleted", "destroy_disks": true, "dirs": [], "domain_name": "instance-00000004", "finalize_db": false, "findings": [], "instance_uuid": "9a2e0000-0000-4000-8000-000000000004", "reason": "instance is deleted in Nova but its domain is still on this host", "service_facts": null, "services": [], "shared_storage": null, "vifs": [{"derived": false, "devices": [{"ifindex": 10, "kind": "bridge", "name": "qbr@PH@04-04", "role": "qbr"}, {"ifindex": 12, "kind": "veth", "name": "qvb@PH@04-04", "role": "qvb"}, {"ifindex": 11, "kind": "veth", "name": "qvo@PH@04-04", "role": "qvo"}, {"ifindex": 13, "kind": "tun", "name": "tap@PH@04-04", "role": "tap"}], "found_by": ["OVS vm-uuid", "domain XML"], "hybrid": true, "ovs_ports": [{"bridge": "@BR@", "iface_id": "@PH@04-0400-4000-8000-000000000004", "name": "qvo@PH@04-04", "uuid": "edb904e0-71f6-4525-8abd-cbbf73a443c3"}], "port_id": "@PH@04-0400-4000-8000-000000000004", "prefix": "@PH@04-04", "vm_uuids": ["9a2e0000-0000-4000-8000-000000000004"]}], "volumes": []}','running',1,NULL,'2026-11-30T12:23:12.201678','2026-11-30T12:23:12.201678','{"pid": 24968, "start": 2567200, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
CREATE TABLE journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
INSERT INTO "journal_steps" VALUES(1,'destroy_domain','done','destroyed','2026-11-30T12:23:12.214986');
INSERT INTO "journal_steps" VALUES(1,'unplug_vifs','started',NULL,'2026-11-30T12:23:12.220809');
CREATE TABLE observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
INSERT INTO "observations" VALUES('domain:instance-00000004','running_deleted','2026-11-30T12:23:12.176852','2026-11-30T12:23:12.176852',1);
INSERT INTO "observations" VALUES('vif:qbr@PH@02-02','leaked_vif','2026-11-30T12:23:12.176852','2026-11-30T12:23:12.176852',1);
INSERT INTO "observations" VALUES('vif:qvo@PH@02-02','leaked_vif','2026-11-30T12:23:12.176852','2026-11-30T12:23:12.176852',1);
INSERT INTO "observations" VALUES('vif:qvb@PH@02-02','leaked_vif','2026-11-30T12:23:12.176852','2026-11-30T12:23:12.176852',1);
INSERT INTO "observations" VALUES('vif:tap@PH@02-02','leaked_vif','2026-11-30T12:23:12.176852','2026-11-30T12:23:12.176852',1);
INSERT INTO "observations" VALUES('ovs_port:qvo@PH@02-02','leaked_vif','2026-11-30T12:23:12.176852','2026-11-30T12:23:12.176852',1);
CREATE INDEX journal_status_idx ON journal (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('journal',1);
COMMIT;

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
INSERT INTO "journal" VALUES(1,'req-b0ea2861-5c20-4ae6-b7bc-7ebeffcd9798','9a2e0000-0000-4000-8000-000000000004','{"action": "reap", "claim_marker": null, "classification": "running_deleted", "destroy_disks": true, "dirs": [], "domain_name": "instance-00000004", "finalize_db": false, "findings": [], "instance_uuid": "9a2e0000-0000-4000-8000-000000000004", "reason": "instance is deleted in Nova but its domain is still on this host", "service_facts": null, "services": [], "shared_storage": null, "vifs": [{"derived": false, "devices": [{"ifindex": 10, "kind": "bridge", "name": "qbr@PH@04-04", "role": "qbr"}, {"ifindex": 12, "kind": "veth", "name": "qvb@PH@04-04", "role": "qvb"}, {"ifindex": 11, "kind": "veth", "name": "qvo@PH@04-04", "role": "qvo"}, {"ifindex": 13, "kind": "tun", "name": "tap@PH@04-04", "role": "tap"}], "found_by": ["OVS vm-uuid", "domain XML"], "hybrid": true, "ovs_ports": [{"bridge": "@BR@", "iface_id": "@PH@04-0400-4000-8000-000000000004", "name": "qvo@PH@04-04", "uuid": "e4702602-0621-4d38-8d5e-56bd26f6c466"}], "port_id": "@PH@04-0400-4000-8000-000000000004", "prefix": "@PH@04-04", "vm_uuids": ["9a2e0000-0000-4000-8000-000000000004"]}], "volumes": []}','done',1,NULL,'2026-11-30T12:23:01.189770','2026-11-30T12:23:01.430841','{"pid": 24968, "start": 2567200, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
INSERT INTO "journal" VALUES(2,'req-b0ea2861-5c20-4ae6-b7bc-7ebeffcd9798','vif:@PH@02-02','{"action": "reap", "claim_marker": null, "classification": "leaked_vif", "destroy_disks": false, "dirs": [], "domain_name": null, "finalize_db": false, "findings": [], "instance_uuid": "vif:@PH@02-02", "reason": "no live or in-flight instance on this host claims port @PH@02-0200-4000-8000-000000000002 (1 network_info read), no domain uses it, and its vm-uuid 9a2e0000-0000-4000-8000-000000000002 is not among this host''s live or in-flight instances", "service_facts": null, "services": [], "shared_storage": null, "vifs": [{"derived": false, "devices": [{"ifindex": 6, "kind": "bridge", "name": "qbr@PH@02-02", "role": "qbr"}, {"ifindex": 8, "kind": "veth", "name": "qvb@PH@02-02", "role": "qvb"}, {"ifindex": 7, "kind": "veth", "name": "qvo@PH@02-02", "role": "qvo"}, {"ifindex": 9, "kind": "tun", "name": "tap@PH@02-02", "role": "tap"}], "found_by": ["leak"], "hybrid": true, "ovs_ports": [{"bridge": "@BR@", "iface_id": "@PH@02-0200-4000-8000-000000000002", "name": "qvo@PH@02-02", "uuid": "b23c7288-8b65-4c47-8c18-c8b08f77b1cc"}], "port_id": "@PH@02-0200-4000-8000-000000000002", "prefix": "@PH@02-02", "vm_uuids": ["9a2e0000-0000-4000-8000-000000000002"]}], "volumes": []}','running',1,NULL,'2026-11-30T12:23:01.469450','2026-11-30T12:23:01.469450','{"pid": 24968, "start": 2567200, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
CREATE TABLE journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
INSERT INTO "journal_steps" VALUES(1,'destroy_domain','done','destroyed','2026-11-30T12:23:01.201130');
INSERT INTO "journal_steps" VALUES(1,'unplug_vifs','done','@PH@04-04: removed qbr@PH@04-04, ovs @BR@:qvo@PH@04-04, qvo@PH@04-04 (and qvb@PH@04-04), tap@PH@04-04','2026-11-30T12:23:01.413732');
INSERT INTO "journal_steps" VALUES(1,'undefine_domain','done','undefined (plain)','2026-11-30T12:23:01.425088');
INSERT INTO "journal_steps" VALUES(2,'unplug_vifs','started',NULL,'2026-11-30T12:23:01.484509');
CREATE TABLE observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
INSERT INTO "observations" VALUES('domain:instance-00000004','running_deleted','2026-11-30T12:23:01.157533','2026-11-30T12:23:01.157533',1);
INSERT INTO "observations" VALUES('vif:qbr@PH@02-02','leaked_vif','2026-11-30T12:23:01.157533','2026-11-30T12:23:01.157533',1);
INSERT INTO "observations" VALUES('vif:qvo@PH@02-02','leaked_vif','2026-11-30T12:23:01.157533','2026-11-30T12:23:01.157533',1);
INSERT INTO "observations" VALUES('vif:qvb@PH@02-02','leaked_vif','2026-11-30T12:23:01.157533','2026-11-30T12:23:01.157533',1);
INSERT INTO "observations" VALUES('vif:tap@PH@02-02','leaked_vif','2026-11-30T12:23:01.157533','2026-11-30T12:23:01.157533',1);
INSERT INTO "observations" VALUES('ovs_port:qvo@PH@02-02','leaked_vif','2026-11-30T12:23:01.157533','2026-11-30T12:23:01.157533',1);
CREATE INDEX journal_status_idx ON journal (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('journal',2);
COMMIT;

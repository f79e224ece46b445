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
INSERT INTO "journal" VALUES(1,'req-b24a5c6d-0cf9-4f83-bf89-1d71c763cc3b','@UUID@','{"action": "reclaim", "claim_marker": null, "classification": "reclaimable", "destroy_disks": true, "dirs": [], "domain_name": null, "finalize_db": true, "findings": [], "instance_uuid": "@UUID@", "reason": "soft-deleted longer than reclaim_instance_interval (3600s); no domain left", "service_facts": {"host": "@HOST@", "migration_id": null, "network_info": "ok", "node": "@HOST@.node", "node_uuid": null, "ports": [{"id": "@NOVA_PORT@", "preserve_on_delete": false}, {"id": "@PRE_PORT@", "preserve_on_delete": true}], "uuid": "@UUID@", "volumes": [{"attachment_id": "@ATTACHMENT_ID@", "connector": null, "delete_on_termination": true, "volume_id": "@NEW_VOLUME@"}, {"attachment_id": null, "connector": {"enforce_multipath": false, "host": "@HOST@", "initiator": "iqn.1993-08.org.debian:01:@HOST@", "ip": "127.0.0.1", "multipath": false, "os_type": "linux", "platform": "x86_64"}, "delete_on_termination": false, "volume_id": "@OLD_VOLUME@"}]}, "services": ["release_ports", "detach_volumes", "delete_allocations"], "shared_storage": null, "vifs": [], "volumes": []}','running',1,NULL,'2026-11-30T12:29:03.086838','2026-11-30T12:29:03.086838','{"pid": 31549, "start": 2600185, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "__main__.py"}');
CREATE TABLE journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
INSERT INTO "journal_steps" VALUES(1,'claim','done','claimed (task_state=deleting, marker @HOST@:2026-11-30T12:29:03:req-b24a5c6d-0cf9-4f83-bf89-1d71c763cc3b)','2026-11-30T12:29:03.104007');
INSERT INTO "journal_steps" VALUES(1,'release_ports','done','deleted 1 port(s); unbound 1','2026-11-30T12:29:08.601408');
INSERT INTO "journal_steps" VALUES(1,'detach_volumes','started',NULL,'2026-11-30T12:29:08.603450');
CREATE TABLE observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
INSERT INTO "observations" VALUES('instance:@UUID@','reclaimable','2026-11-30T12:29:03.056233','2026-11-30T12:29:03.056233',1);
CREATE INDEX journal_status_idx ON journal (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('journal',1);
COMMIT;

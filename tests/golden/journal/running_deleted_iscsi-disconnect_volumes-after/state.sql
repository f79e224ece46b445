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
INSERT INTO "journal" VALUES(1,'req-54e49c02-00e3-411d-b7e8-f18185e982fe','9a2e0000-0000-4000-8000-00000000000d','{"action": "reap", "claim_marker": null, "classification": "running_deleted", "destroy_disks": true, "dirs": [], "domain_name": "instance-0000000d", "finalize_db": false, "findings": [], "instance_uuid": "9a2e0000-0000-4000-8000-00000000000d", "reason": "instance is deleted in Nova but its domain is still on this host", "service_facts": null, "services": [], "shared_storage": null, "vifs": [], "volumes": [{"device_path": "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:volume-r-lun-1", "dm": null, "keep": null, "multipath": false, "origin": "domain_xml", "targets": [{"device": "sdb", "hctl": "3:0:0:1", "iqn": "iqn.2010-10.org.openstack:volume-r", "logout": true, "lun": 1, "node": true, "portal": "192.0.2.10:3260", "session_iqn": "iqn.2010-10.org.openstack:volume-r", "session_portal": "192.0.2.10:3260", "sid": "2", "wwid": "naa.6001405ba302766535b8b4fe76548e6"}], "volume_id": "9a2e0000-0000-4000-8000-0000000000d1"}]}','running',1,NULL,'2026-11-30T12:26:39.078607','2026-11-30T12:26:39.078607','{"pid": 29236, "start": 2589471, "boot_id": "765c1a16-668e-4385-9b73-8c1dffd13450", "process": "reaper-manage"}');
CREATE TABLE journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
INSERT INTO "journal_steps" VALUES(1,'destroy_domain','done','destroyed','2026-11-30T12:26:39.083440');
INSERT INTO "journal_steps" VALUES(1,'disconnect_volumes','started',NULL,'2026-11-30T12:26:39.084339');
CREATE TABLE observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
INSERT INTO "observations" VALUES('domain:instance-0000000d','running_deleted','2026-11-30T12:26:39.065042','2026-11-30T12:26:39.065042',1);
INSERT INTO "observations" VALUES('instance:9a2e0000-0000-4000-8000-00000000000a','live','2026-11-30T12:26:39.065042','2026-11-30T12:26:39.065042',1);
INSERT INTO "observations" VALUES('vif:tapcafe6abc-d3','leaked_vif','2026-11-30T12:26:39.065042','2026-11-30T12:26:39.065042',1);
CREATE INDEX journal_status_idx ON journal (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('journal',1);
COMMIT;
